"""The random-noise baseline: Gaussian noise at exactly the budget, no gradients, no codec."""

from __future__ import annotations

import torch

from robust_nic.attacks.budget import Budget, expand, per_image
from robust_nic.attacks.draws import Draws
from robust_nic.attacks.optimizers import OPTIMIZERS

REFILLS = 3  # clipping to [0,1] loses norm; rescaling a few times wins most of it back


@OPTIMIZERS.register("noise")
def gaussian_noise(x: torch.Tensor, budget: Budget, draws: Draws) -> torch.Tensor:
    """x plus Gaussian noise whose norm is eps (as close as [0,1] clipping allows)."""
    delta = budget.project(x, budget.scaled_noise(x, draws))
    eps = expand(per_image(budget.eps, x), x)
    for _ in range(REFILLS):
        size = expand(budget.size(delta), x).clamp_min(1e-12)
        delta = budget.project(x, delta * eps / size)
    return x + delta


gaussian_noise.gradient_free = True  # no codec, no gradient: the attack calls it with (x, budget, draws)
