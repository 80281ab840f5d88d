"""Today's codecs in the registry: ELIC, the checkerboard-context Cheng2020 and the variable-rate (-vbr) models.

    model.arch                   class (CompressAI 1.2.8)              channels   quality
    elic2022-official            Elic2022Official                      (N, M)     lambda only (1..8)
    elic2022-chandelier          Elic2022Chandelier                    (N, M)     lambda only (1..8)
    cheng2020-checkerboard       Cheng2020AnchorCheckerboard           (N,)       zoo's N of cheng2020 (1..6)
    bmshj2018-hyperprior-vbr     ScaleHyperpriorVbr                    (N, M)     rate index = quality - 1 (1..8)
    mbt2018-mean-vbr             MeanScaleHyperpriorVbr                (N, M)     rate index = quality - 1 (1..8)

ELIC and the checkerboard model are built on CompressAI's latent-codec API (`g_a`, `latent_codec`, `g_s`); the
subclasses here only add what the registry needs: the channel counts as attributes, ELIC's channel groups scaled
with M (the paper's 16, 16, 32, 64, M-128 at M=320), and `from_state_dict` that reads N, M and the groups from
the weights (CompressAI's reads only N). Their state dicts are CompressAI's, key for key.

The variable-rate models take their rate (CompressAI's `s`, the index into their lambdas, which are this
project's mse lambdas) from model.quality: quality q codes at rate index q - 1 and trains with lambda_for(q),
so one trained model is attacked at several rates by sweeping model.quality over one checkpoint.
"""

from __future__ import annotations

import re

import torch
from compressai.models.sensetime import Cheng2020AnchorCheckerboard, Elic2022Chandelier, Elic2022Official
from compressai.models.vbr import MeanScaleHyperpriorVbr, ScaleHyperpriorVbr
from compressai.zoo import image_vbr

from robust_nic.codecs import CodecError, register_codec

ELIC_GROUPS = (16, 16, 32, 64)  # of M = 320; the last group takes the rest


def elic_groups(M: int) -> list[int]:
    """ELIC's uneven channel groups scaled to M channels (M=320: 16, 16, 32, 64, 192)."""
    groups = [max(1, round(g * M / 320)) for g in ELIC_GROUPS]
    if sum(groups) >= M:
        raise CodecError(f"ELIC needs at least {sum(groups) + 1} latent channels (model.channels=[N, M]); got M={M}")
    return [*groups, M - sum(groups)]


def _elic_dims(state_dict: dict) -> tuple[int, int, list[int]]:
    N = state_dict["g_a.0.weight"].size(0)
    M = state_dict["g_a.13.weight"].size(0)
    pattern = re.compile(r"\.y(\d+)\.context_prediction\.weight$")
    found = {int(m.group(1)): v.size(1) for k, v in state_dict.items() if (m := pattern.search(k))}
    if not found:
        raise KeyError("no ELIC checkerboard context weights (latent_codec....y0.context_prediction.weight)")
    return N, M, [found[k] for k in sorted(found)]


def _check_published_elic_layout(state_dict: dict) -> None:
    """The published ELIC re-implementation (JiangWeibeta/ELIC) names its modules differently (cc_transforms,
    context_prediction, ParamAggregation, gaussian_conditional at the top level)."""
    if any(k.startswith(("cc_transforms.", "ParamAggregation.", "context_prediction.")) for k in state_dict):
        raise CodecError(
            "these weights are in the layout of the published ELIC re-implementation (cc_transforms, "
            "ParamAggregation, ...), whose context model differs from CompressAI's Elic2022Official layer for "
            "layer; only CompressAI's Elic2022Official/Elic2022Chandelier state dicts load here"
        )


class _ElicFromStateDict:
    @classmethod
    def from_state_dict(cls, state_dict):
        _check_published_elic_layout(state_dict)
        N, M, groups = _elic_dims(state_dict)
        net = cls(N, M, groups=groups)
        net.load_state_dict(state_dict)
        return net


_ELIC_CONFIGS = {q: (192, 320) for q in range(1, 9)}


@register_codec("elic2022-official", configs=_ELIC_CONFIGS)
class Elic(_ElicFromStateDict, Elic2022Official):
    """CompressAI's Elic2022Official with its groups scaled to M (small CPU configurations)."""

    def __init__(self, N: int = 192, M: int = 320, groups: list[int] | None = None):
        super().__init__(N, M, groups=groups or elic_groups(M))
        self.N, self.M = N, M


@register_codec("elic2022-chandelier", configs=_ELIC_CONFIGS)
class ElicChandelier(_ElicFromStateDict, Elic2022Chandelier):
    """CompressAI's Elic2022Chandelier (context from the first and the latest group) with groups scaled to M."""

    def __init__(self, N: int = 192, M: int = 320, groups: list[int] | None = None):
        super().__init__(N, M, groups=groups or elic_groups(M))
        self.N, self.M = N, M


@register_codec("cheng2020-checkerboard", configs={q: ((128,) if q <= 3 else (192,)) for q in range(1, 7)})
class Cheng2020Checkerboard(Cheng2020AnchorCheckerboard):
    """Cheng2020 anchor with the checkerboard (two-pass) spatial context instead of the serial one."""

    def __init__(self, N: int = 192):
        super().__init__(N)
        self.N = N

    @classmethod
    def from_state_dict(cls, state_dict):
        net = cls(state_dict["g_a.0.conv1.weight"].size(0))
        net.load_state_dict(state_dict)
        return net


class _RateIndexed:
    """Forward, compress, decompress and update of a -vbr model at one rate index (set from model.quality).

    Only CompressAI's stage 2 (the variable-rate path with gains and quantization offsets) is used.
    """

    rate_index: int = 0

    def use_quality(self, quality: int) -> None:
        if not 1 <= quality <= len(self.lmbda):
            raise CodecError(f"quality {quality} is out of range for a variable-rate model (1..{len(self.lmbda)})")
        self.rate_index = quality - 1

    def _scale(self) -> torch.Tensor:
        return torch.abs(self.Gain[self.rate_index]).detach()

    def forward(self, x):
        return super().forward(x, stage=2, s=self.rate_index)

    def compress(self, x):
        return super().compress(x, stage=2, s=self.rate_index)

    def decompress(self, strings, shape):
        return super().decompress(strings, shape, stage=2, s=self.rate_index)

    def update(self, scale_table=None, force=False):
        # the variable-rate hyper-latent bottleneck (pretrained weights) needs the rate's step size
        scale = self._scale() if self.vr_entbttlnck else None
        return super().update(scale_table=scale_table, force=force, scale=scale)

    @classmethod
    def from_state_dict(cls, state_dict):
        N, M = state_dict["g_a.0.weight"].size(0), state_dict["g_a.6.weight"].size(0)
        net = cls(N, M, vr_entbttlnck="gayn2zqstep.0.weight" in state_dict)
        net.load_state_dict({k: v for k, v in state_dict.items() if k != "QuantOffset"})
        return net


VARIABLE_RATE_BASE = _RateIndexed  # its forward/compress pair: coding.EncoderOutputs replays g_a and h_a for it


def _vbr_urls(arch: str) -> dict:
    return {metric: {q: url for q in range(1, 9)} for metric, url in image_vbr.model_urls[arch].items()}


@register_codec("bmshj2018-hyperprior-vbr", {q: (192, 320) for q in range(1, 9)}, _vbr_urls("bmshj2018-hyperprior-vbr"))
class HyperpriorVbr(_RateIndexed, ScaleHyperpriorVbr):
    def __init__(self, N: int = 192, M: int = 320, vr_entbttlnck: bool = False):
        super().__init__(N, M, vr_entbttlnck=vr_entbttlnck)


@register_codec("mbt2018-mean-vbr", {q: (192, 320) for q in range(1, 9)}, _vbr_urls("mbt2018-mean-vbr"))
class MeanScaleVbr(_RateIndexed, MeanScaleHyperpriorVbr):
    def __init__(self, N: int = 192, M: int = 320, vr_entbttlnck: bool = False):
        super().__init__(N, M, vr_entbttlnck=vr_entbttlnck)
