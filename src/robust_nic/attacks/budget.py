"""The perturbation budget: per-image norms, projection, random starts and budget-safe 8-bit rounding."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_nic.attacks.draws import Draws
from robust_nic.metrics import to_8bit
from robust_nic.settings import NORMS

# Slack for float32 round-off when comparing a norm with eps ([0,1] units; 1/255 = 3.9e-3).
ATOL = 1e-6

# Scales tried, in order, when 8-bit rounding pushes a perturbation over budget.
SHRINK = (0.995, 0.98, 0.96, 0.93, 0.9, 0.85, 0.8)

Eps = float | torch.Tensor


def per_image(value: Eps, x: torch.Tensor) -> torch.Tensor:
    """A float or an (N,) tensor as an (N,) tensor on x's device and dtype."""
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return value.expand(x.shape[0]) if value.ndim == 0 else value.reshape(x.shape[0])


def expand(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1, 1) for broadcasting against images."""
    return value.reshape(-1, *([1] * (x.ndim - 1)))


def rms(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).pow(2).mean(1).sqrt()


def linf(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).abs().amax(1)


@dataclass(frozen=True)
class Budget:
    """Allowed perturbations: `norm` (rms | linf) <= eps per image, inside an optional L-inf box `linf`.

    Adversarial images always stay in [0,1]. eps is a float or one value per image.
    """

    norm: str = "rms"
    eps: Eps = 0.01
    linf: float | None = None

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"unknown attack.norm {self.norm!r}; choose one of {list(NORMS)}")
        if torch.any(torch.as_tensor(self.eps) < 0):
            raise ValueError(f"attack.eps must be >= 0, got {self.eps}")
        if self.linf is not None and self.linf < 0:
            raise ValueError(f"attack.linf must be >= 0 or null, got {self.linf}")

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        """The budgeted norm of each image's perturbation."""
        return rms(delta) if self.norm == "rms" else linf(delta)

    def box(self, x: torch.Tensor) -> torch.Tensor:
        """The per-image L-inf bound every pixel must respect, (N,1,1,1)."""
        bound = per_image(self.eps, x) if self.norm == "linf" else torch.full_like(x[:, 0, 0, 0], torch.inf)
        if self.linf is not None:
            bound = bound.clamp(max=self.linf)
        return expand(bound, x)

    def within(self, x: torch.Tensor, x_adv: torch.Tensor, atol: float = ATOL) -> torch.Tensor:
        """Per image: does x_adv respect the budget (norm, box and [0,1])?"""
        delta = (x_adv - x).double()
        ok = self.size(delta) <= per_image(self.eps, x).double() + atol
        if self.linf is not None:
            ok &= linf(delta) <= self.linf + atol
        return ok & (x_adv.flatten(1).amin(1) >= 0) & (x_adv.flatten(1).amax(1) <= 1)

    def clip(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """x + delta inside the L-inf box and [0,1] (the element-wise constraints; rms is not enforced)."""
        box = self.box(x)
        return (x + torch.maximum(torch.minimum(delta, box), -box)).clamp(0, 1)

    def project(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The perturbation of an image inside the budget: box, rms scaling, [0,1]; returns the new delta.

        Every step only shrinks |delta| element-wise, so later steps never undo earlier ones.
        """
        delta = self.clip(x, delta) - x
        if self.norm == "rms":
            eps = expand(per_image(self.eps, x), x)
            delta = delta * (eps / expand(rms(delta), x).clamp_min(1e-12)).clamp(max=1)
        return delta

    def random(self, x: torch.Tensor, draws: Draws, only: torch.Tensor | None = None) -> torch.Tensor:
        """A random in-budget perturbation (random start): uniform in the box for linf, a random
        direction at the full radius for rms. `only`: see Draws (per-image draws for some images)."""
        if self.norm == "linf":
            unit = draws.rand(x, only) * 2 - 1
            return self.project(x, unit * self.box(x))
        return self.project(x, self.scaled_noise(x, draws, only))

    def scaled_noise(self, x: torch.Tensor, draws: Draws, only: torch.Tensor | None = None) -> torch.Tensor:
        """Gaussian noise scaled so its norm is exactly eps (before [0,1] clipping)."""
        noise = draws.randn(x, only)
        eps = expand(per_image(self.eps, x), x)
        return noise * eps / expand(self.size(noise), x).clamp_min(1e-12)

    def round(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """x_adv rounded to 8 bits and still inside the budget.

        Nearest rounding first; an image pushed over budget gets its perturbation shrunk slightly and
        re-rounded, and as a last resort is rounded towards x (never over budget when x itself is
        8-bit, as real images are). Branch-free per image, so no host sync.
        """
        delta = self.project(x, x_adv - x)
        out = to_8bit(x + delta)
        done = self.within(x, out)
        for scale in SHRINK:
            candidate = to_8bit(x + scale * delta)
            take = ~done & self.within(x, candidate)
            out = torch.where(expand(take, x), candidate, out)
            done |= take
        # Towards x: truncate the level; the 1e-4-level slack absorbs float32 error in (x + delta) * 255
        # (~3e-5 levels) and stays far below ATOL.
        level = (x + delta) * 255
        toward = torch.where(delta >= 0, (level + 1e-4).floor(), (level - 1e-4).ceil()).clamp(0, 255) / 255
        return torch.where(expand(done, x), out, toward)
