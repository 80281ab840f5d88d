"""Latent-range defense: clamp each latent channel of y = g_a(x) to the range natural images reach.

An adversarial perturbation drives some latent channels far outside anything a photo produces (the
paper's latent-range analysis); clamping y to each channel's natural [min, max] before quantization
cuts that off. The ranges are fitted on the training photos with

    robust-nic fit-latent-range model.checkpoint=CKPT        # writes CKPT.latent_range.pt

and used with `python evaluate.py model.checkpoint=CKPT defense=latent_range defense.ranges=CKPT.latent_range.pt`.
The clamped latents go through the real entropy coder; adaptive attacks see the clamp (zero gradient
outside the range, like the decoder), transferred ones are crafted on the bare codec.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from compressai.models import CompressionModel
from torch import Tensor, nn

from robust_nic.coding import Coded, code, forward_padded, pad
from robust_nic.defenses.base import DEFENSES, Defense
from robust_nic.settings import ConfigError, check_range

RANGES_SUFFIX = ".latent_range.pt"
FIT = f"`robust-nic fit-latent-range model.checkpoint=CKPT` (writes CKPT{RANGES_SUFFIX})"


@dataclass(frozen=True)
class LatentRangeOptions:
    ranges: str | None = None  # the file written by `robust-nic fit-latent-range` (required)
    margin: float = 0.0  # widen each channel's range by this fraction of its width on both sides

    def __post_init__(self):
        # Checked with the settings, so a missing file stops the run before the codec is loaded.
        if self.ranges is None:
            raise ConfigError(
                f"defense=latent_range needs defense.ranges=FILE: fit it on the training photos with {FIT}"
            )
        if not Path(self.ranges).is_file():
            raise ConfigError(f"defense.ranges={self.ranges} does not exist; fit it with {FIT}")
        check_range("defense", "margin", self.margin, 0)


class ChannelClamp(nn.Module):
    def __init__(self, low: Tensor, high: Tensor):
        super().__init__()
        self.register_buffer("low", low.reshape(1, -1, 1, 1).float())
        self.register_buffer("high", high.reshape(1, -1, 1, 1).float())

    def forward(self, y: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(y, self.high), self.low)


@torch.no_grad()
def fit_latent_range(codec: CompressionModel, images) -> dict:
    """Per latent channel, the min and max of g_a(x) over `images` (1x3xHxW tensors in [0, 1])."""
    low = high = None
    count = 0
    for x in images:
        x_padded, _ = pad(x)
        y = codec.g_a(x_padded)
        y_low, y_high = y.amin(dim=(0, 2, 3)), y.amax(dim=(0, 2, 3))
        low = y_low if low is None else torch.minimum(low, y_low)
        high = y_high if high is None else torch.maximum(high, y_high)
        count += 1
    if count == 0:
        raise ValueError("no images to fit the latent ranges on")
    return {"low": low.cpu(), "high": high.cpu(), "images": count}


def load_ranges(path: str | Path) -> dict:
    ranges = torch.load(path, map_location="cpu", weights_only=True)  # data, never code
    if not isinstance(ranges, dict) or not {"low", "high"} <= set(ranges):
        raise ValueError(
            f"{path} is not a latent-range file (no low/high); re-run robust-nic fit-latent-range"
        )
    return ranges


@DEFENSES.register("latent_range", options=LatentRangeOptions)
class LatentRange(Defense):
    name = "latent_range"

    def __init__(self, codec: CompressionModel, ranges: str | None = None, margin: float = 0.0):
        super().__init__(codec)
        options = LatentRangeOptions(ranges, margin)  # checks the values and that the file exists
        ranges, margin = options.ranges, options.margin
        fitted = load_ranges(ranges)
        low, high = fitted["low"], fitted["high"]
        channels = getattr(codec, "M", None)
        if channels is not None and low.numel() != channels:
            raise ValueError(
                f"{ranges} holds ranges for {low.numel()} latent channels, the codec has {channels}: "
                "fit them for this codec (robust-nic fit-latent-range model.checkpoint=CKPT)"
            )
        width = high - low
        self.ranges, self.margin = str(ranges), float(margin)
        self.clamp = ChannelClamp(low - margin * width, high + margin * width)
        # The codec with g_a followed by the clamp: a shallow copy sharing every parameter and buffer,
        # kept outside the module tree so the state dict and .to() see each tensor once.
        clamped = copy.copy(codec)
        clamped._modules = dict(codec._modules)
        clamped._modules["g_a"] = nn.Sequential(codec.g_a, self.clamp)
        object.__setattr__(self, "_clamped", clamped)

    @property
    def description(self) -> str:
        extra = f" widened by {self.margin:g} of their width" if self.margin else ""
        return f"latent channels clamped to their natural ranges{extra} ({self.ranges})"

    def config(self) -> dict:
        return {"name": self.name, "ranges": self.ranges, "margin": self.margin}

    def train(self, mode: bool = True):
        super().train(mode)
        self._clamped.training = mode  # the copy's own flag (its submodules are the codec's)
        return self

    def forward(self, x: Tensor) -> dict:
        return forward_padded(self._clamped, x)

    def code(self, x: Tensor, update: bool = False) -> Coded:
        return code(self._clamped, x, update=update)
