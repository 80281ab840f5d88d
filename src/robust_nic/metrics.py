"""Image-quality metrics on 8-bit values, as CompressAI reports them.

Non-finite inputs give NaN, never a number: an MSE that is NaN or infinite has no PSNR. Only bit-identical
images (MSE exactly 0) have an infinite PSNR, and callers that average choose a cap for that case alone.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

# MS-SSIM's five scale weights (Wang et al. 2003; torchmetrics' default `betas`) and Gaussian window.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WINDOW = 11
# All five scales need sides above (11 - 1) * 2**4: the coarsest scale then still exceeds the window.
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
    """torchmetrics' PSNR in dB per image between two [0,1] batches, on their 8-bit values (`identical` when
    they are bit-identical, NaN when either holds a NaN; an inf pixel clips to 0 or 1 like any 8-bit image)."""
    a, b = to_8bit(a).double(), to_8bit(b).double()
    value = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=tuple(range(1, a.ndim)))
    return torch.where(value == math.inf, torch.full_like(value, identical), value)


def ms_ssim_window(side: int) -> int:
    """The window: the standard 11 px Gaussian, or a 3 px uniform one for images of 10 px or less per side."""
    return MS_SSIM_WINDOW if side >= MS_SSIM_WINDOW else 3


def ms_ssim_scales(side: int) -> int:
    """How many of MS-SSIM's 5 scales an image whose smaller side is `side` px allows: L scales need
    side > (window - 1) * 2 ** (L - 1), so that the coarsest scale is still wider than the window."""
    window, scales = ms_ssim_window(side), 1
    while scales < len(MS_SSIM_WEIGHTS) and side > (window - 1) * 2**scales:
        scales += 1
    return scales


def ms_ssim_betas(scales: int) -> tuple[float, ...]:
    """torchmetrics' `betas` for `scales` scales: the standard five, or the first `scales` of them
    renormalised to sum to 1 (so that a perfect and a uniformly degraded image score as with five)."""
    if scales == len(MS_SSIM_WEIGHTS):
        return MS_SSIM_WEIGHTS
    total = sum(MS_SSIM_WEIGHTS[:scales])
    return tuple(w / total for w in MS_SSIM_WEIGHTS[:scales])


def ssim_window_args(window: int) -> dict:
    """torchmetrics' SSIM window arguments: its 11 px Gaussian (sigma 1.5), or a 3 px uniform window."""
    if window == MS_SSIM_WINDOW:
        return {"gaussian_kernel": True, "sigma": 1.5, "kernel_size": window}
    return {"gaussian_kernel": False, "kernel_size": window}


def multiscale_ssim(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """MS-SSIM per image over the scales the size allows (ms_ssim_scales, betas from ms_ssim_betas):
    torchmetrics' SSIM and contrast-structure terms per scale, combined as torchmetrics'
    multiscale_structural_similarity_index_measure(normalize="relu") combines them (equal to it wherever
    torchmetrics accepts the size; its own size check also refuses e.g. 161-175 px sides for 5 scales).

    Each scale's term is clipped below at `floor` (torchmetrics' relu: 0). The loss passes a small positive
    floor: x ** beta with beta < 1 has a gradient growing without bound as a term nears 0, and relu leaves an
    image with one term <= 0 a product of 0 with no gradient at all; floored, the other scales keep theirs."""
    side = min(a.shape[-2:])
    scales, window = ms_ssim_scales(side), ms_ssim_window(side)
    kwargs = {"data_range": 1.0, "reduction": "none", "return_contrast_sensitivity": True}
    terms = []
    for level in range(scales):
        sim, cs = structural_similarity_index_measure(a, b, **kwargs, **ssim_window_args(window))
        terms.append(cs if level < scales - 1 else sim)
        if level < scales - 1:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    betas = torch.tensor(ms_ssim_betas(scales), device=sim.device)
    return (torch.stack(terms).clamp_min(floor) ** betas.view(-1, 1)).prod(0)


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
    return multiscale_ssim(to_8bit(a).float(), to_8bit(b).float()).double()


def ms_ssim_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM per image, differentiable, with as many of the 5 scales as the image size allows: the
    training loss and the attacks' distance (both run on small crops too). The metric's own computation,
    each scale floored away from 0 for finite gradients."""
    return 1 - multiscale_ssim(a.clamp(0, 1), b.clamp(0, 1), floor=1e-6)


def ms_ssim_db(value: torch.Tensor | float) -> torch.Tensor:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM), as CompressAI's plots use."""
    value = torch.as_tensor(value, dtype=torch.float64)
    return -10 * torch.log10((1 - value).clamp_min(1e-12))
