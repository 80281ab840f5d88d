"""The one real coding path: pad to a multiple of 64, entropy-code, decode, crop; bpp from the bitstream."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from compressai.models import CompressionModel
from compressai.ops import compute_padding

from robust_nic.metrics import to_8bit

PAD_MULTIPLE = 64  # six stride-2 stages in every zoo codec


def pad(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad (centred, as compressai.utils.eval_model does) to a multiple; returns the unpad spec."""
    padding, unpad = compute_padding(x.shape[-2], x.shape[-1], min_div=multiple)
    return F.pad(x, padding, mode="constant", value=0), unpad


def crop(x: torch.Tensor, unpad: tuple[int, int, int, int]) -> torch.Tensor:
    return F.pad(x, unpad)


def forward_padded(codec: CompressionModel, x: torch.Tensor) -> dict:
    """codec.forward on an input of any size (the differentiable proxy of coding).

    Modules that pad by themselves (defenses, which must see the unpadded image) say so with
    `pads_input = True` and are called directly.
    """
    if getattr(codec, "pads_input", False):
        return codec(x)
    x_padded, unpad = pad(x)
    out = codec(x_padded)
    out["x_hat"] = crop(out["x_hat"], unpad)
    return out


def bpp_from_likelihoods(likelihoods: dict, num_pixels: int) -> torch.Tensor:
    """Estimated bits per pixel per image: -sum log2 p over all latents / pixels."""
    bits = sum(torch.log(p).flatten(1).sum(1) for p in likelihoods.values())
    return bits / (-math.log(2) * num_pixels)


@dataclass
class Coded:
    """Result of really coding a batch: reconstructions and per-image rates."""

    x_hat: torch.Tensor  # decoded, cropped, 8-bit rounded
    bpp: torch.Tensor  # bitstream bits / unpadded pixels, per image
    bpp_est: torch.Tensor  # likelihood estimate, per image
    encode_s: float
    decode_s: float
    strings: list
    shape: object


def ensure_updated(codec: CompressionModel) -> None:
    """Build the CDF tables if they are missing (compress needs them)."""
    codec.update(force=False)


@torch.no_grad()
def code(codec: CompressionModel, x: torch.Tensor, update: bool = False) -> Coded:
    """Code a batch of [0,1] images (rounded to 8 bits first) with the real entropy coder.

    The codec is used in eval mode and its mode is restored afterwards. `update=True` rebuilds the
    CDFs (call it once after the weights change; validation does).
    """
    was_training = codec.training
    codec.eval()
    try:
        if update:
            codec.update(force=True)
        else:
            ensure_updated(codec)
        x = to_8bit(x)
        num_pixels = x.shape[-2] * x.shape[-1]
        x_padded, unpad = pad(x)
        sync(x)
        start = time.perf_counter()
        enc = codec.compress(x_padded)
        sync(x)
        encode_s = time.perf_counter() - start
        start = time.perf_counter()
        dec = codec.decompress(enc["strings"], enc["shape"])
        sync(x)
        decode_s = time.perf_counter() - start
        x_hat = to_8bit(crop(dec["x_hat"], unpad))
        bits = torch.tensor(
            [sum(len(stream[i]) for stream in enc["strings"]) * 8.0 for i in range(x.shape[0])],
            dtype=torch.float64,
        )
        bpp_est = bpp_from_likelihoods(codec(x_padded)["likelihoods"], num_pixels).double().cpu()
    finally:
        codec.train(was_training)
    return Coded(x_hat, bits / num_pixels, bpp_est, encode_s, decode_s, enc["strings"], enc["shape"])


def sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
