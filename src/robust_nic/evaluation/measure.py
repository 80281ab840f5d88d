"""Per-image measurements of clean and attacked coding (shared by validation and evaluate.py)."""

from __future__ import annotations

import dataclasses
import math

import torch

from robust_nic.coding import Coded
from robust_nic.metrics import ms_ssim, ms_ssim_db, psnr
from robust_nic.reconstruction import smooth_reconstruction

# Bit-identical 8-bit images (MSE exactly 0, and only they) have infinite PSNR: capped so averages stay finite.
PSNR_CAP = 100.0


class NonFiniteError(RuntimeError):
    """A measurement came out NaN or infinite (a broken decode, attack or weights); it is never reported as a
    number. The message names the images and the stage."""


def capped_psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR per image; PSNR_CAP only for bit-identical images (MSE exactly 0). A NaN in either image gives
    NaN, never the cap."""
    return psnr(a, b, identical=PSNR_CAP)


def not_coded(x: torch.Tensor) -> Coded:
    """What the coding of a non-finite input measures: NaN everywhere. Such an input is never handed to
    the entropy coder (CompressAI's range coder never returns on NaN latents: measured, a hang)."""
    nan = torch.full((x.shape[0],), math.nan, dtype=torch.float64)
    return Coded(torch.full_like(x, math.nan), nan, nan.clone(), 0.0, 0.0, [], None)


def code_or_nan(code, x: torch.Tensor) -> Coded:
    """`code(x)` (the real coding of x); an image of the batch that is not finite (not an image) is not
    coded and measures NaN, the others are coded as usual."""
    finite = torch.isfinite(x).flatten(1).all(1)
    if bool(finite.all()):
        return code(x)
    if not bool(finite.any()):
        return not_coded(x)
    coded, out = code(x[finite]), not_coded(x)
    out.x_hat[finite] = coded.x_hat.to(out.x_hat.dtype)
    out.bpp[finite.cpu()], out.bpp_est[finite.cpu()] = coded.bpp.double().cpu(), coded.bpp_est.double().cpu()
    return dataclasses.replace(out, encode_s=coded.encode_s, decode_s=coded.decode_s)


def clean_metrics(x: torch.Tensor, coded: Coded) -> dict[str, torch.Tensor]:
    """Per-image rate and quality of the real coding of source x."""
    return {
        "bpp": coded.bpp,
        "bpp_est": coded.bpp_est,
        "psnr": capped_psnr(x, coded.x_hat).cpu(),
        "ms_ssim": ms_ssim(x, coded.x_hat).cpu(),
        "encode_s": torch.full_like(coded.bpp, coded.encode_s / x.shape[0]),
        "decode_s": torch.full_like(coded.bpp, coded.decode_s / x.shape[0]),
    }


def adversarial_metrics(
    x: torch.Tensor, x_adv: torch.Tensor, clean: Coded, attacked: Coded
) -> dict[str, torch.Tensor]:
    """Per-image damage of an attack: the paper's vulnerability index delta_psnr and rate change.

    delta_psnr = PSNR(x, x_adv) - PSNR(x_hat, x_hat_adv): how many dB the codec amplifies the
    input perturbation. MS-SSIM deltas are in dB (clean minus attacked; positive means damage).
    """
    psnr_in = capped_psnr(x, x_adv).cpu()
    psnr_out = capped_psnr(clean.x_hat, attacked.x_hat).cpu()
    # A bit-identical attacked reconstruction has an infinite psnr_out: its delta_psnr is then only an
    # upper bound computed from the cap. Labelled, so that a mean over such images is never taken unknowingly.
    unchanged = (psnr_out == PSNR_CAP) & (psnr_in < PSNR_CAP)
    clean_ms_ssim = ms_ssim(x, clean.x_hat).cpu()
    adv_ms_ssim = ms_ssim(x, attacked.x_hat).cpu()
    return {
        "psnr_in": psnr_in,
        "psnr_out": psnr_out,
        "delta_psnr": psnr_in - psnr_out,
        "output_unchanged": unchanged.double(),
        "psnr": capped_psnr(x, attacked.x_hat).cpu(),
        "ms_ssim": adv_ms_ssim,
        "delta_ms_ssim_db": ms_ssim_db(clean_ms_ssim) - ms_ssim_db(adv_ms_ssim),
        "bpp": attacked.bpp,
        "bpp_est": attacked.bpp_est,
        "delta_bpp_pct": 100 * (attacked.bpp - clean.bpp) / clean.bpp,
    }


def smooth_delta_psnr(
    codec: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, smooth: torch.Tensor
) -> torch.Tensor:
    """delta_psnr through the transforms alone (`smooth` = smooth_reconstruction(codec, x), computed once
    per image). The difference to delta_psnr is what latents pushed across rounding boundaries add
    (bench/damage_sources.py: most of it on small codecs, and what adversarial finetuning there does not remove)."""
    return (capped_psnr(x, x_adv) - capped_psnr(smooth, smooth_reconstruction(codec, x_adv))).cpu()
