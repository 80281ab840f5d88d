"""Bitrate attack: inflate the bitstream, with a hinge at a target bpp (`attack=bitrate`).

Maximises the rate the entropy model assigns to the attacked image's latents (bpp_est from the
likelihoods of the straight-through or noise proxy), capped per image at `attack.target_bpp`:
min(bpp, target). An image that reached the target scores the cap, its gradient vanishes and the
best-iterate bookkeeping keeps the first iterate that got there, so the attack stops pushing it instead
of overshooting; without a target it simply maximises the rate. The objective `rate` with a target, by
contrast, pulls bpp towards the target from both sides. Steps, projection and random start are PGD's.
Measured, like every attack, by the real entropy coder (test/adv/bpp, delta_bpp_pct).
"""

from __future__ import annotations

import dataclasses

import torch

from robust_nic.attacks.engine import Problem
from robust_nic.attacks.iterative import PGDOptions, iterative
from robust_nic.attacks.objectives import Objective
from robust_nic.attacks.optimizers import OPTIMIZERS

UNCAPPED_RATE = Objective(kind="rate")


@dataclasses.dataclass(frozen=True)
class HingeRate:
    """min(bpp_est, target_bpp) per image (bpp_est alone without a target)."""

    target_bpp: float | None

    def score(self, out: dict, goal: torch.Tensor | None) -> torch.Tensor:
        bpp = UNCAPPED_RATE.score(out, goal)  # the rate objective's bpp_est (and its missing-likelihoods error)
        return bpp if self.target_bpp is None else bpp.clamp(max=self.target_bpp)


@OPTIMIZERS.register("bitrate", options=PGDOptions)
def bitrate(problem: Problem, options: PGDOptions, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    hinge = HingeRate(problem.objective.target_bpp)
    return iterative(dataclasses.replace(problem, objective=hinge), "pgd", options, progress)
