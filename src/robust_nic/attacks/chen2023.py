"""The paper's optimiser (Chen & Ma 2023): Adam on the perturbation with a hard budget switch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_nic.attacks.budget import per_image
from robust_nic.attacks.engine import Problem, iterate
from robust_nic.attacks.optimizers import OPTIMIZERS

LR_DROP = 0.33  # lr x0.33 at each third of the steps


@dataclass(frozen=True)
class Chen2023Options:
    steps: int = 1001  # the paper's; CPU evaluation configs lower this
    lr: float = 0.01  # Adam's step size on the perturbation
    random_start: bool = False  # the paper starts at zero


@OPTIMIZERS.register("chen2023", options=Chen2023Options)
def chen2023(problem: Problem, options: Chen2023Options, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on n (zero init); per image and step: over budget -> minimise MSE(x, x+n), else maximise
    the objective. The rms budget is enforced by that switch (the paper's way), the element-wise
    constraints (L-inf norm or box, [0,1]) by clamping n. Keeps each image's best in-budget iterate."""
    x, budget, steps = problem.x, problem.budget, options.steps
    start = budget.random(x, problem.draws) if options.random_start else torch.zeros_like(x)
    delta = start.requires_grad_(True)
    optimizer = torch.optim.Adam([delta], lr=options.lr, fused=delta.is_cuda)  # fewer kernel launches per step on GPU
    eps = per_image(budget.eps, x)
    milestones = {steps // 3, 2 * steps // 3} - {0}

    def gain(x_adv: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        if budget.norm != "rms":
            return score
        # MSE, not rms: the sqrt's gradient at n = 0 would be NaN even in the unselected branch.
        mse = (x_adv - x).pow(2).flatten(1).mean(1)
        return torch.where(mse.detach() > eps.pow(2), -mse, score)

    def update(delta: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        if step + 1 in milestones:
            for group in optimizer.param_groups:
                group["lr"] *= LR_DROP
        delta.grad = -grad  # Adam minimises; we maximise the gain
        optimizer.step()
        with torch.no_grad():
            delta.copy_(budget.clip(x, delta) - x)
        return delta

    def feasible(x_adv: torch.Tensor) -> torch.Tensor:
        return budget.within(x, x_adv)

    return iterate(
        problem, delta, steps, update, gain=gain, feasible=feasible, progress=progress, desc="chen2023"
    )
