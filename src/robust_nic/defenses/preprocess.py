"""Input pre-processing baselines: bicubic down/up-scaling and bit-depth reduction."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from compressai.models import CompressionModel
from torch import Tensor

from robust_nic.coding import Coded, code, forward_padded, sync
from robust_nic.defenses.base import DEFENSES, Defense
from robust_nic.metrics import to_8bit
from robust_nic.settings import ConfigError, check_range


def bicubic(x: Tensor, size: tuple[int, int], antialias: bool) -> Tensor:
    # Bicubic overshoots: clamp so the result is still an image in [0, 1].
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=antialias).clamp(0, 1)


@dataclass(frozen=True)
class ResizeOptions:
    factor: float = 0.5  # in (0, 1]
    antialias: bool = True

    def __post_init__(self):
        check_range("defense", "factor", self.factor, 0, 1, low_open=True)


@DEFENSES.register("resize", options=ResizeOptions)
class Resize(Defense):
    """Bicubic down-scale by `factor`, code the small image, bicubic up-scale after decoding.

    The up-scaling is the receiver's post-processing: the bitstream holds the small image only, and bpp
    is its bits over the ORIGINAL pixel count. `antialias` low-pass filters the down-scaling (as PIL does);
    it is differentiable too.
    """

    name = "resize"

    def __init__(self, codec: CompressionModel, factor: float = 0.5, antialias: bool = True):
        super().__init__(codec)
        options = ResizeOptions(factor, antialias)  # checks the values
        self.factor = float(options.factor)
        self.antialias = bool(options.antialias)

    @property
    def description(self) -> str:
        aa = ", antialiased" if self.antialias else ""
        return f"bicubic down-scale x{self.factor:g}{aa} before coding, bicubic up-scale after decoding"

    def config(self) -> dict:
        return {"name": self.name, "factor": self.factor, "antialias": self.antialias}

    def small_size(self, h: int, w: int) -> tuple[int, int]:
        return max(1, round(h * self.factor)), max(1, round(w * self.factor))

    def down(self, x: Tensor) -> Tensor:
        return bicubic(x, self.small_size(*x.shape[-2:]), self.antialias)

    def forward(self, x: Tensor) -> dict:
        out = forward_padded(self.codec, self.down(x))
        out["x_hat"] = bicubic(out["x_hat"], tuple(x.shape[-2:]), antialias=False)
        return out

    @torch.no_grad()
    def code(self, x: Tensor, update: bool = False) -> Coded:
        x = to_8bit(x)
        small = to_8bit(self.down(x))  # the sender stores a real 8-bit small image
        coded = code(self.codec, small, update=update)
        sync(x)
        start = time.perf_counter()
        x_hat = to_8bit(bicubic(coded.x_hat, tuple(x.shape[-2:]), antialias=False))
        sync(x)
        upsample_s = time.perf_counter() - start
        scale = small.shape[-2] * small.shape[-1] / (x.shape[-2] * x.shape[-1])
        return dataclasses.replace(
            coded,
            x_hat=x_hat,
            bpp=coded.bpp * scale,
            bpp_est=coded.bpp_est * scale,
            decode_s=coded.decode_s + upsample_s,
        )


def reduce_bits(x: Tensor, bits: int) -> Tensor:
    levels = 2**bits - 1
    return (x.clamp(0, 1) * levels).round() / levels


@dataclass(frozen=True)
class BitDepthOptions:
    bits: int = 5  # in 1..8

    def __post_init__(self):
        if not isinstance(self.bits, int) or isinstance(self.bits, bool):
            raise ConfigError(f"defense.bits={self.bits!r} must be an int in [1, 8]")
        check_range("defense", "bits", self.bits, 1, 8)


@DEFENSES.register("bitdepth", options=BitDepthOptions)
class BitDepth(Defense):
    """Quantize the input to `bits` bits per channel before coding (squeezes small perturbations away).

    The differentiable forward passes the quantization straight through (BPDA), so an adaptive attack
    still gets gradients. The real path still stores an 8-bit image (code() rounds it).
    """

    name = "bitdepth"

    def __init__(self, codec: CompressionModel, bits: int = 5):
        super().__init__(codec)
        self.bits = BitDepthOptions(bits).bits  # checks the value

    @property
    def description(self) -> str:
        return f"input reduced to {self.bits} bits per channel before coding"

    def config(self) -> dict:
        return {"name": self.name, "bits": self.bits}

    def reduce(self, x: Tensor) -> Tensor:
        return reduce_bits(x, self.bits)

    def forward(self, x: Tensor) -> dict:
        x_q = x + (self.reduce(x) - x).detach()  # straight-through: identity gradient
        return forward_padded(self.codec, x_q)

    @torch.no_grad()
    def code(self, x: Tensor, update: bool = False) -> Coded:
        return code(self.codec, self.reduce(to_8bit(x)), update=update)
