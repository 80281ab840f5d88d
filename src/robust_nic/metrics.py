"""Image-quality metrics on 8-bit values, as CompressAI reports them."""

from __future__ import annotations

import math

import torch
from pytorch_msssim import ms_ssim as _ms_ssim

# pytorch-msssim's 5-scale MS-SSIM with an 11-px window needs sides above (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 161


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round [0,1] images to the 256 levels a PNG holds (still in [0,1], float)."""
    return (x.clamp(0, 1) * 255).round() / 255


def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).flatten(1).mean(1)


def psnr_from_mse(mse: torch.Tensor | float) -> torch.Tensor:
    mse = torch.as_tensor(mse, dtype=torch.float64)
    return torch.where(mse > 0, -10 * torch.log10(mse.clamp_min(1e-20)), torch.full_like(mse, math.inf))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image between two [0,1] batches, on their 8-bit values (inf when identical)."""
    return psnr_from_mse(mse_per_image(to_8bit(a).double(), to_8bit(b).double()))


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image on 8-bit values; NaN for images too small for its five scales."""
    if min(a.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return torch.full((a.shape[0],), float("nan"), dtype=torch.float64)
    return _ms_ssim(to_8bit(a).float(), to_8bit(b).float(), data_range=1.0, size_average=False).double()


def ms_ssim_db(value: torch.Tensor | float) -> torch.Tensor:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM), as CompressAI's plots use."""
    value = torch.as_tensor(value, dtype=torch.float64)
    return -10 * torch.log10((1 - value).clamp_min(1e-12))
