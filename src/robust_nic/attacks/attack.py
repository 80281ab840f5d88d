"""An attack is a configured callable: `attack(codec, x, target=None, mask=None) -> x_adv`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from robust_nic.attacks.budget import Budget, Eps, expand
from robust_nic.attacks.draws import Draws
from robust_nic.attacks.engine import Problem
from robust_nic.attacks.objectives import Objective
from robust_nic.attacks.optimizers import OPTIMIZERS, load_optimizers
from robust_nic.reconstruction import (
    PROXIES_WITH_LIKELIHOODS,
    ProxyError,
    Surrogate,
    check_proxy,
    rounded_reconstruction,
)
from robust_nic.registry import RegistryError
from robust_nic.settings import SELECT, ConfigError


class AttackConfigError(ConfigError):
    """An attack configuration that cannot work; the message names the attack.* key to change."""


@dataclass(frozen=True)
class AttackResult:
    x_adv: torch.Tensor  # 8-bit rounded, inside the budget
    score: torch.Tensor  # per image: objective value of the kept iterate (before rounding); NaN for noise


@dataclass(frozen=True)
class Attack:
    """Optimiser + budget + objective + quantization proxy. The codec is left exactly as found
    (parameters, .grad, requires_grad, train/eval flags); x_adv is 8-bit and within budget.

    `name` is a registered optimiser (robust_nic.attacks.optimizers) and `options` its options
    dataclass (None: its defaults)."""

    name: str = "chen2023"
    budget: Budget = dataclasses.field(default_factory=Budget)
    objective: Objective = dataclasses.field(default_factory=Objective)
    proxy: str = "skip"
    options: object = None
    restarts: int = 1
    seed: int | tuple[int, ...] | None = 0  # a tuple: one seed per image of the batch (see Draws)
    progress: bool = False
    warmup_steps: int = 0
    select: str = "best"  # best: each image's strongest iterate; last: the final one (finetuning, cheaper)

    def __post_init__(self):
        if self.select not in SELECT:
            raise AttackConfigError(f"attack.select must be one of {list(SELECT)}, not {self.select!r}")
        if self.select == "last" and self.restarts > 1:
            raise AttackConfigError("attack.restarts > 1 keeps the strongest run, which needs attack.select=best")
        try:
            entry = load_optimizers().get(self.name)
        except RegistryError as err:
            raise AttackConfigError(f"{err} (or none), as attack.name / attack=NAME") from err
        if self.options is None and entry.options is not None:
            object.__setattr__(self, "options", entry.options())
        try:
            check_proxy(self.proxy)
        except ProxyError as err:
            raise AttackConfigError(str(err)) from err
        if (
            not getattr(entry.target, "gradient_free", False)
            and self.objective.needs_likelihoods
            and self.proxy not in PROXIES_WITH_LIKELIHOODS
        ):
            raise AttackConfigError(
                f"attack.objective=rate needs likelihoods, which attack.proxy={self.proxy!r} does not give; "
                f"use attack.proxy=ste or noise"
            )
        steps = getattr(self.options, "steps", 1)
        if steps < 1 or self.restarts < 1:
            raise AttackConfigError(f"attack.steps and attack.restarts must be >= 1 (got {steps}, {self.restarts})")

    @property
    def optimizer(self):
        return OPTIMIZERS.get(self.name).target

    @property
    def eps(self) -> Eps:
        return self.budget.eps

    def with_eps(self, eps: Eps) -> Attack:
        """The same attack at another budget (cheap: configs only)."""
        return dataclasses.replace(self, budget=dataclasses.replace(self.budget, eps=eps))

    def eps_at(self, step: int) -> Eps:
        """eps ramped linearly over the first `warmup_steps` training steps (step counts from 0)."""
        if self.warmup_steps <= 0:
            return self.eps
        return self.eps * min(1.0, (step + 1) / self.warmup_steps)

    def at_step(self, step: int) -> Attack:
        """The attack to use at finetuning step `step` (eps warm-up applied)."""
        return self.with_eps(self.eps_at(step))

    def __call__(
        self,
        codec: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.run(codec, x, target, mask).x_adv

    def run(
        self,
        codec: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack a batch of [0,1] images (N,3,H,W, any H, W) on x's device.

        `codec` is any module whose forward returns {"x_hat", "likelihoods"} (a codec or a defense
        wrapping one, for adaptive attacks). `target`/`mask` are for objective=targeted.
        """
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "attacks need autograd, but inference mode is on (Lightning validation/test?): "
                "use Trainer(inference_mode=False) or call the attack outside torch.inference_mode()"
            )
        x = x.detach().clone()  # also turns an inference tensor into a normal one
        draws = Draws.seeded(self.seed, x.device)
        if isinstance(self.seed, tuple) and len(self.seed) != x.shape[0]:
            raise ValueError(f"attack.seed holds {len(self.seed)} per-image seeds for a batch of {x.shape[0]}")
        if getattr(self.optimizer, "gradient_free", False):
            x_adv = self.optimizer(x, self.budget, draws)
            return AttackResult(self.budget.round(x, x_adv), torch.full_like(x[:, 0, 0, 0], torch.nan))
        with torch.enable_grad():
            recon = rounded_reconstruction(codec, x) if self.objective.needs_recon else None
            goal = self.objective.goal(x, recon, target, mask)
            if draws.per_image and self.proxy == "noise":
                # Latent noise is drawn in the entropy models' own layout, not per image.
                raise AttackConfigError("attack.proxy=noise has no per-image draws: attack its images one at a time")
            surrogate = Surrogate(codec, self.proxy, draws.generators[0])
            with surrogate.active():
                problem = Problem(x, self.budget, self.objective, surrogate, goal, draws, self.select)
                best_x, best_score = None, None
                for _ in range(self.restarts):
                    x_r, score_r = self._optimise(problem)
                    if best_x is None:
                        best_x, best_score = x_r, score_r
                    else:
                        better = score_r > best_score
                        best_x = torch.where(expand(better, x), x_r, best_x)
                        best_score = torch.where(better, score_r, best_score)
        return AttackResult(self.budget.round(x, best_x), best_score)

    def _optimise(self, problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
        return self.optimizer(problem, self.options, self.progress)
