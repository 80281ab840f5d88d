"""Projected gradient ascent family: PGD, I-FGSM and MI-FGSM share one loop and differ in the step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_nic.attacks.budget import expand, per_image, rms
from robust_nic.attacks.engine import Problem, iterate
from robust_nic.attacks.optimizers import OPTIMIZERS


def default_alpha(norm: str, eps: float | torch.Tensor, steps: int) -> float | torch.Tensor:
    """Steps that can cross the budget 2.5 times over the run; for rms at least a quarter radius.

    Few-step attacks (finetuning's cheap inner loop) thus take budget-sized steps, as in FGSM with
    random start (Wong et al. 2020), instead of barely leaving their random start."""
    reach = 2.5 / max(steps, 1)
    return eps * (reach if norm == "linf" else max(0.25, reach))


@dataclass(frozen=True)
class IFGSMOptions:
    steps: int = 100
    alpha: float | None = None  # step size; None = 2.5*eps/steps (linf), at least eps/4 (rms)
    random_start: bool = False


@dataclass(frozen=True)
class PGDOptions(IFGSMOptions):
    random_start: bool = True


@dataclass(frozen=True)
class MIFGSMOptions(IFGSMOptions):
    decay: float = 1.0  # momentum decay


@OPTIMIZERS.register("pgd", options=PGDOptions)
def pgd(problem: Problem, options: PGDOptions, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    return iterative(problem, "pgd", options, progress)


@OPTIMIZERS.register("ifgsm", options=IFGSMOptions)
def ifgsm(problem: Problem, options: IFGSMOptions, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    return iterative(problem, "ifgsm", options, progress)


@OPTIMIZERS.register("mifgsm", options=MIFGSMOptions)
def mifgsm(problem: Problem, options: MIFGSMOptions, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    return iterative(problem, "mifgsm", options, progress)


def iterative(problem: Problem, name: str, options, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient ascent with projection onto the budget after every step.

    pgd: rms-normalised gradient step (rms norm) or sign step (linf); ifgsm: sign step; mifgsm: sign
    (or rms-normalised) step along the L1-normalised gradient momentum (`decay`). Every step has size
    `alpha` in the budget's norm.
    """
    steps, alpha, random_start = options.steps, options.alpha, options.random_start
    decay = getattr(options, "decay", 1.0)
    x, budget = problem.x, problem.budget
    alpha = default_alpha(budget.norm, budget.eps, steps) if alpha is None else alpha
    alpha = expand(per_image(alpha, x), x)
    use_sign = name == "ifgsm" or budget.norm == "linf"
    delta = budget.random(x, problem.draws) if random_start else torch.zeros_like(x)
    momentum = torch.zeros_like(x) if name == "mifgsm" else None

    def update(delta: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        nonlocal momentum
        if momentum is not None:
            momentum = decay * momentum + grad / expand(grad.flatten(1).abs().mean(1), x).clamp_min(1e-20)
            grad = momentum
        if use_sign:
            step_ = grad.sign()
        else:
            step_ = grad / expand(rms(grad), x).clamp_min(1e-20)
        return budget.project(x, delta + alpha * step_)

    return iterate(problem, delta, steps, update, progress=progress, desc=name)
