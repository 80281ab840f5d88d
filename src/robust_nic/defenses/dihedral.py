"""The 8 dihedral transforms of an image (rotations by 90 degrees, with and without a horizontal flip).

Index k in 0..7: k % 4 quarter turns (counter-clockwise, torch.rot90), applied after a horizontal flip
when k >= 4. Odd k swap height and width.
"""

from __future__ import annotations

import torch

NUM_TRANSFORMS = 8
NAMES = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "hflip",
    "hflip+rot90",
    "hflip+rot180",
    "hflip+rot270",
)


def check_index(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < NUM_TRANSFORMS:
        raise ValueError(f"dihedral transform index must be an int in 0..7 ({', '.join(NAMES)}), got {k!r}")
    return k


def transform(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply transform k to the last two (H, W) dims; exact (a permutation of pixels), differentiable."""
    check_index(k)
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo transform k: inverse(transform(x, k), k) == x exactly."""
    check_index(k)
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    if k >= 4:
        x = x.flip(-1)
    return x


def swaps_hw(k: int) -> bool:
    return check_index(k) % 2 == 1
