"""Build codecs: registered architectures (CompressAI's zoo and your own), qualities, lambdas, weights and
checkpoints.

A codec from outside the zoo is a CompressionModel subclass registered with its constructor arguments per
quality (and a `from_state_dict` classmethod, as the zoo models have, so checkpoints load):

    @register_codec("my-codec", configs={1: (64, 96), 2: (96, 128)})
    class MyCodec(CompressionModel): ...

then `python train.py model.arch=my-codec model.module=my_package.codecs` (model.module is imported
first, so that the decorator runs) trains, evaluates, attacks and exports it like the zoo ones.
"""

from __future__ import annotations

import importlib
import os
import urllib.error
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from compressai.models import CompressionModel
from compressai.zoo import image as zoo_image
from compressai.zoo.pretrained import load_pretrained

from robust_nic.registry import Registry, RegistryError
from robust_nic.settings import ConfigError

METRICS = ("mse", "ms-ssim")

# CompressAI's rate-distortion trade-offs, indexed by quality 1..8.
LAMBDAS = {
    "mse": (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800),
    "ms-ssim": (2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.00),
}


class CodecError(ConfigError):
    """A codec cannot be built or loaded as configured; the message says how to fix it."""


@dataclass(frozen=True)
class CodecSpec:
    cls: type[CompressionModel]
    configs: Mapping[int, tuple]  # quality -> constructor arguments, e.g. (N, M)
    urls: Mapping[str, Mapping[int, str]] = field(default_factory=dict)  # metric -> quality -> weights URL


CODECS = Registry("codec architecture (model.arch)")


def register_codec(name: str, configs: Mapping[int, tuple], urls: Mapping | None = None):
    """Class decorator: `name` becomes a model.arch, built with `configs[quality]`."""

    def decorate(cls: type[CompressionModel]) -> type[CompressionModel]:
        if not configs:
            raise CodecError(f"register_codec({name!r}) needs at least one quality in configs")
        CODECS.register(name)(CodecSpec(cls, dict(configs), dict(urls or {})))
        return cls

    return decorate


for _arch, _cls in list(zoo_image.model_architectures.items()):
    # CompressAI 1.2.8 spells one name with _ in model_architectures and with - in cfgs
    _configs = zoo_image.cfgs.get(_arch) or zoo_image.cfgs.get(_arch.replace("_", "-"))
    if not _configs:
        # compressai.utils.eval_model adds its variable-rate (-vbr) models to this dict when imported: they
        # have no per-quality configs, so they are not codecs of this project (skipped, whatever the import order).
        continue
    register_codec(_arch, _configs, zoo_image.model_urls.get(_arch, {}))(_cls)


def import_codec_module(module: str | None) -> None:
    """model.module: the user's module that registers more architectures (imported once)."""
    if not module:
        return
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise CodecError(f"model.module={module} cannot be imported ({err}); is it on PYTHONPATH?") from err


# Architectures CompressAI ships that this project cannot run, and why (refused by name, before any work).
UNSUPPORTED = {
    "mbt2018-vbr": "its variable-rate autoregressive context model has no quantization proxy here",
}


def codec_spec(arch: str) -> CodecSpec:
    if arch in UNSUPPORTED:
        raise CodecError(f"model.arch={arch} is not supported: {UNSUPPORTED[arch]}; use mbt2018-mean-vbr or mbt2018")
    try:
        return CODECS.get(arch).target
    except RegistryError as err:
        raise CodecError(f"{err}; a codec of your own: see robust_nic.codecs.register_codec") from err


def architectures() -> list[str]:
    return CODECS.names()


def qualities(arch: str) -> list[int]:
    return sorted(codec_spec(arch).configs)


def check_arch(arch: str) -> None:
    codec_spec(arch)


def check_quality(arch: str, quality: int) -> None:
    allowed = qualities(arch)
    if quality not in allowed:
        raise CodecError(f"quality {quality} is out of range for {arch}; allowed qualities: {allowed}")


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise CodecError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")


def lambda_for(metric: str, quality: int) -> float:
    check_metric(metric)
    if not 1 <= quality <= len(LAMBDAS[metric]):
        raise CodecError(f"no lambda for quality {quality}; qualities run 1..{len(LAMBDAS[metric])}")
    return LAMBDAS[metric][quality - 1]


def codec_class(arch: str) -> type[CompressionModel]:
    return codec_spec(arch).cls


def build_codec(
    arch: str,
    quality: int,
    metric: str = "mse",
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    channels: list[int] | None = None,
) -> CompressionModel:
    """A codec of architecture `arch`: from a checkpoint, CompressAI's pretrained weights, or scratch.

    `channels` overrides the zoo's (N, M) for small from-scratch codecs (the `tiny` config).
    """
    check_arch(arch)
    check_metric(metric)
    check_quality(arch, quality)
    if checkpoint:
        return at_quality(load_codec_checkpoint(arch, checkpoint, expected={"quality": quality, "metric": metric}), quality)
    if pretrained:
        return at_quality(load_pretrained_codec(arch, quality, metric), quality)
    cls = codec_class(arch)
    args = tuple(channels) if channels else codec_spec(arch).configs[quality]
    return at_quality(cls(*args), quality)


def at_quality(codec: CompressionModel, quality: int) -> CompressionModel:
    """A variable-rate codec (one with `use_quality`) codes at the rate model.quality selects."""
    use_quality = getattr(codec, "use_quality", None)
    if use_quality is not None:
        use_quality(quality)
    return codec


def real_channels(codec: CompressionModel, arch: str) -> list[int] | None:
    """The channel counts `codec` was built with, as `channels` / the zoo's constructor takes them:
    (N, M), or (N,) for cheng2020. None for a codec without N."""
    n, m = getattr(codec, "N", None), getattr(codec, "M", None)
    if n is None:
        return None
    arity = len(next(iter(codec_spec(arch).configs.values())))
    return [int(n), int(m if m is not None else n)][:arity]


def pretrained_url(arch: str, quality: int, metric: str) -> str:
    urls = codec_spec(arch).urls.get(metric, {})
    if quality not in urls:
        raise CodecError(f"CompressAI has no pretrained {arch} weights for metric={metric}, quality={quality}")
    return urls[quality]


def pretrained_path(url: str) -> Path:
    """Where torch.hub caches a downloaded file (the same place CompressAI's zoo uses)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_pretrained_codec(arch: str, quality: int, metric: str) -> CompressionModel:
    url = pretrained_url(arch, quality, metric)
    path = pretrained_path(url)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise CodecError(
                f"could not download pretrained {arch} (quality {quality}, {metric}) weights from {url}: {err}.\n"
                f"Offline? Put the file at {path}, or train from scratch with model.pretrained=false, "
                f"or load your own weights with model.checkpoint=PATH."
            ) from err
    state_dict = load_pretrained(torch.load(path, map_location="cpu", weights_only=True))
    return codec_from_state_dict(arch, state_dict, source=str(path))


def extract_codec_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The codec's weights from a Lightning checkpoint of this project or a CompressAI state dict."""
    if "state_dict" in checkpoint and any(k.startswith("codec.") for k in checkpoint["state_dict"]):
        return {k[len("codec.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("codec.")}
    for key in ("network", "state_dict", "model_state_dict"):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return checkpoint[key]
    return checkpoint


def load_codec_checkpoint(arch: str, path: str | os.PathLike, expected: dict | None = None) -> CompressionModel:
    """The codec in `path`; warns when the run's model settings (`expected`) differ from those saved in it."""
    path = Path(path)
    if not path.is_file():
        raise CodecError(f"checkpoint {path} does not exist; pass an existing file as model.checkpoint=PATH")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with code, truncated files, other formats
        raise CodecError(
            f"cannot load checkpoint {path} safely (torch.load weights_only=True): {err}. "
            "Use a Lightning checkpoint of this project or a plain CompressAI state dict."
        ) from err
    if not isinstance(checkpoint, dict):
        raise CodecError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state dict")
    warn_on_settings_mismatch(checkpoint, expected or {}, path)
    state_dict = load_pretrained(extract_codec_state_dict(checkpoint))  # also strips DataParallel's module.
    return codec_from_state_dict(arch, state_dict, source=str(path))


def warn_on_settings_mismatch(checkpoint: dict, expected: dict, path: Path) -> None:
    """A checkpoint of this project remembers its model settings; finetuning it at another quality
    silently changes the loss lambda (and every label), which is legitimate but rarely intended."""
    saved = ((checkpoint.get("hyper_parameters") or {}).get("cfg") or {}).get("model") or {}
    for key, value in expected.items():
        if key in saved and saved[key] is not None and value is not None and saved[key] != value:
            warnings.warn(
                f"{path} was trained with model.{key}={saved[key]} but this run uses model.{key}={value} "
                f"(its lambda and labels follow {value}); pass model.{key}={saved[key]} to keep the "
                f"checkpoint's rate-distortion trade-off.",
                stacklevel=3,
            )


def codec_from_state_dict(arch: str, state_dict: dict, source: str) -> CompressionModel:
    cls = codec_class(arch)
    try:
        # from_state_dict infers the channel counts and resizes the entropy-model CDF buffers.
        return cls.from_state_dict(state_dict)
    except (KeyError, RuntimeError, IndexError, AttributeError) as err:
        raise CodecError(
            f"{source} does not hold {arch} weights ({type(err).__name__}: {str(err)[:300]}). "
            f"Is it a checkpoint of another architecture? Set model=... (model.arch) to the one it was trained as."
        ) from err


def plain_state_dict(codec: CompressionModel) -> dict[str, torch.Tensor]:
    """A CompressAI state dict (after update(), CDFs included) that compressai.utils.eval_model reads."""
    codec.update(force=True)
    return {k: v.detach().cpu().clone() for k, v in codec.state_dict().items()}


def export_codec(codec: CompressionModel, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(plain_state_dict(codec), path)
    return path


def resize_entropy_buffers(codec: CompressionModel, state_dict: dict, prefix: str = "") -> None:
    """Resize the CDF buffers of `codec` to the sizes in `state_dict` (keys under `prefix`).

    CompressAI does this only inside its own load_state_dict; a LightningModule holding the codec
    must do it before the generic loader runs.
    """
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

    for name, module in codec.named_modules():
        if isinstance(module, (EntropyBottleneck, GaussianConditional)):
            for buffer_name, buffer in module.named_buffers(recurse=False):
                key = f"{prefix}{name}.{buffer_name}"
                if key in state_dict and state_dict[key].shape != buffer.shape:
                    buffer.resize_(state_dict[key].shape)


# The latent-codec API codecs (ELIC, checkerboard) and the variable-rate ones register themselves.
from robust_nic import latent_codecs  # noqa: E402, F401
