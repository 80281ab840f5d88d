"""The one step loop every gradient attack shares: one surrogate forward and one backward per step, plus
one forward that scores the last step's result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from robust_nic.attacks.budget import Budget, expand
from robust_nic.attacks.draws import Draws
from robust_nic.attacks.objectives import Objective
from robust_nic.reconstruction import PROXIES, Surrogate


class ZeroGradientError(RuntimeError):
    """The surrogate passes no gradient to the input: the attack would silently do nothing."""


@dataclass
class Problem:
    """One batch to attack: where to start, what to maximise, what is allowed."""

    x: torch.Tensor
    budget: Budget
    objective: Objective
    surrogate: Surrogate
    goal: torch.Tensor | None
    draws: Draws
    select: str = "best"  # best: each image's strongest scored iterate; last: the final one, unscored

    def score(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x + delta and its objective score, forward only (no gradient)."""
        with torch.no_grad():
            x_adv = self.budget.clip(self.x, delta.detach())
            return x_adv, self.objective.score(self.surrogate(x_adv), self.goal)

    def evaluate(
        self, delta: torch.Tensor, gain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Score the iterate x + delta and take d gain / d delta (gain defaults to the score).

        Returns (x_adv, score, grad), all detached; the score is reused for keeping the best iterate.
        """
        if not delta.requires_grad:
            delta = delta.detach().requires_grad_(True)
        x_adv = self.budget.clip(self.x, delta)
        score = self.objective.score(self.surrogate(x_adv), self.goal)
        total = gain(x_adv, score) if gain is not None else score
        # autograd.grad (not backward): parameters' .grad stays exactly as the caller left it.
        (grad,) = torch.autograd.grad(total.sum(), delta)
        return x_adv.detach(), score.detach(), grad

    def stuck(self, x_adv: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Per image: is the first gradient exactly zero only because the objective is stationary?

        Raises ZeroGradientError when the surrogate itself passes no gradient (proxy none, or a wrapper
        that rounds). Costs one host sync, and one extra forward/backward only when a gradient is zero.
        """
        zero = grad.flatten(1).abs().amax(1) == 0
        if not bool(zero.any()):
            return zero
        probe_in = x_adv.detach().requires_grad_(True)
        out = self.surrogate(probe_in)
        direction = self.draws.randn(out["x_hat"], only=zero)  # per-image draws: only the zero ones draw
        (probe,) = torch.autograd.grad((out["x_hat"] * direction).sum(), probe_in)
        dead = probe.flatten(1).abs().amax(1) == 0
        if bool((zero & dead).any()):
            raise ZeroGradientError(
                f"the input gradient through the codec is exactly zero with attack.proxy={self.surrogate.proxy!r}: "
                "eval-mode rounding of the latents blocks it. Choose a differentiable proxy: "
                f"attack.proxy=skip (g_s(g_a(x)), the paper's), noise or ste (allowed values: {list(PROXIES)})"
            )
        # The objective sits at a stationary point (e.g. ste output == clean reconstruction): restart there.
        return zero


Update = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def iterate(
    problem: Problem,
    delta: torch.Tensor,
    steps: int,
    update: Update,
    gain: Callable | None = None,
    feasible: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
    desc: str = "attack",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `steps` steps of `update(delta, grad, step) -> delta`, keeping each image's best iterate.

    "Best" = highest objective score among iterates that are `feasible` (in budget; every iterate when
    None), the start and the last step's result included: `steps` gradient steps cost `steps` forward and
    backward passes plus one forward (no per-step host sync). With problem.select == "last" (finetuning's
    inner loop) the final iterate is returned unscored (score NaN), without that forward.
    Returns (best x_adv, its score); images with no feasible iterate keep x and score -inf.
    """
    x = problem.x
    keep_best = problem.select == "best"
    best_x, best_score = x.clone(), torch.full((x.shape[0],), -torch.inf, device=x.device, dtype=x.dtype)

    def keep(x_adv: torch.Tensor, score: torch.Tensor) -> None:
        nonlocal best_x, best_score
        better = score > best_score
        if feasible is not None:
            better &= feasible(x_adv)
        best_score = torch.where(better, score, best_score)
        best_x = torch.where(expand(better, x), x_adv, best_x)

    for step in tqdm(range(steps), disable=not progress, desc=desc, leave=False):
        x_adv, score, grad = problem.evaluate(delta, gain)
        if keep_best:
            keep(x_adv, score)
        stuck = problem.stuck(x_adv, grad) if step == 0 else None
        delta = update(delta, grad, step)
        if stuck is not None and bool(stuck.any()):
            with torch.no_grad():
                delta.copy_(torch.where(expand(stuck, x), problem.budget.random(x, problem.draws, only=stuck), delta))
    if not keep_best:
        return problem.budget.clip(x, delta.detach()), torch.full_like(best_score, torch.nan)
    keep(*problem.score(delta))  # the last step's result: without this, the last gradient step is wasted
    return best_x, best_score
