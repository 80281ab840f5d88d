"""Image-quality metrics on 8-bit values, as CompressAI reports them.

Non-finite inputs give NaN, never a number: an MSE that is NaN or infinite has no PSNR. Only bit-identical
images (MSE exactly 0) have an infinite PSNR, and callers that average choose a cap for that case alone.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

# MS-SSIM's five scale weights (Wang et al. 2003; pytorch-msssim's defaults) and Gaussian window.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WINDOW = 11
# All five scales need sides above (11 - 1) * 2**4 (pytorch-msssim refuses smaller images).
MS_SSIM_MIN_SIDE = 161

_warned_scales: set[tuple[int, int]] = set()


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round [0,1] images to the 256 levels a PNG holds (still in [0,1], float)."""
    return (x.clamp(0, 1) * 255).round() / 255


def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).flatten(1).mean(1)


def psnr_from_mse(mse: torch.Tensor | float, identical: float = math.inf) -> torch.Tensor:
    """-10 log10(mse) in dB; `identical` where mse is exactly 0 (bit-identical images); NaN where mse is NaN,
    infinite or negative (a broken measurement stays visibly broken)."""
    mse = torch.as_tensor(mse, dtype=torch.float64)
    value = -10 * torch.log10(mse.clamp_min(1e-300))
    value = torch.where(mse == 0, torch.full_like(mse, identical), value)
    return torch.where(torch.isfinite(mse) & (mse >= 0), value, torch.full_like(mse, math.nan))


def psnr(a: torch.Tensor, b: torch.Tensor, identical: float = math.inf) -> torch.Tensor:
    """PSNR in dB per image between two [0,1] batches, on their 8-bit values (`identical` when they are
    bit-identical, NaN when either holds a NaN; an inf pixel clips to 0 or 1 like any 8-bit image)."""
    return psnr_from_mse(mse_per_image(to_8bit(a).double(), to_8bit(b).double()), identical)


def ms_ssim_window(side: int) -> int:
    """The Gaussian window: the standard 11 px, or 3 px for images of 10 px or less per side."""
    return MS_SSIM_WINDOW if side >= MS_SSIM_WINDOW else 3


def ms_ssim_scales(side: int) -> int:
    """How many of MS-SSIM's 5 scales an image whose smaller side is `side` px allows: L scales need
    side > (window - 1) * 2 ** (L - 1) (pytorch-msssim's own condition for L = 5)."""
    window, scales = ms_ssim_window(side), 1
    while scales < len(MS_SSIM_WEIGHTS) and side > (window - 1) * 2**scales:
        scales += 1
    return scales


def multiscale_ssim(
    a: torch.Tensor, b: torch.Tensor, scales: int, window: int = MS_SSIM_WINDOW, floor: float = 0.0
) -> torch.Tensor:
    """MS-SSIM per image over the first `scales` scales: pytorch-msssim's computation (its `_ssim` kernel,
    constants and weights; exactly its result for 5 scales), with the weights of fewer scales renormalised
    to sum to 1. pytorch-msssim itself refuses sides under 161 px whatever the weights.

    Each scale's term is clipped below at `floor` (pytorch-msssim: 0); attacks differentiate it and pass
    a small positive floor, since x ** w with w < 1 has an infinite gradient at 0."""
    win = _fspecial_gauss_1d(window, 1.5).to(a).repeat([a.shape[1], 1, 1, 1])
    factors = []
    for level in range(scales):
        ssim, cs = _ssim(a, b, data_range=1.0, win=win, size_average=False, K=(0.01, 0.03))
        if level < scales - 1:
            factors.append(cs.clamp_min(floor))
            padding = [s % 2 for s in a.shape[2:]]
            a, b = F.avg_pool2d(a, 2, padding=padding), F.avg_pool2d(b, 2, padding=padding)
    weights = a.new_tensor(MS_SSIM_WEIGHTS[:scales])
    if scales < len(MS_SSIM_WEIGHTS):
        weights = weights / weights.sum()
    values = torch.stack([*factors, ssim.clamp_min(floor)])  # (scales, N, C)
    return values.pow(weights.view(-1, 1, 1)).prod(0).mean(1)


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image on 8-bit values, with as many of its 5 scales as the size allows (warned once per
    scale count below 5; evaluations record `ms_ssim_scales`). NaN only for non-finite inputs."""
    side = min(a.shape[-2:])
    scales, window = ms_ssim_scales(side), ms_ssim_window(side)
    if scales < len(MS_SSIM_WEIGHTS) and (scales, window) not in _warned_scales:
        _warned_scales.add((scales, window))
        warnings.warn(
            f"MS-SSIM of images with a side of {side} px (under {MS_SSIM_MIN_SIDE}) uses {scales} of its 5 scales "
            f"(window {window} px): such values (ms_ssim_scales={scales}) are not comparable with 5-scale MS-SSIM",
            stacklevel=2,
        )
    return multiscale_ssim(to_8bit(a).float(), to_8bit(b).float(), scales, window).double()


def ms_ssim_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM per image, differentiable, with as many of the 5 scales as the image size allows: the
    training loss and the attacks' distance (both run on small crops too). The metric's own computation,
    each scale floored away from 0 for finite gradients."""
    a, b = a.clamp(0, 1), b.clamp(0, 1)
    side = min(a.shape[-2:])
    return 1 - multiscale_ssim(a, b, ms_ssim_scales(side), ms_ssim_window(side), floor=1e-6)


def ms_ssim_db(value: torch.Tensor | float) -> torch.Tensor:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM), as CompressAI's plots use."""
    value = torch.as_tensor(value, dtype=torch.float64)
    return -10 * torch.log10((1 - value).clamp_min(1e-12))
