"""Build CompressAI codecs: zoo architectures, qualities, lambdas, weights and checkpoints."""

from __future__ import annotations

import os
import urllib.error
import warnings
from pathlib import Path

import torch
from compressai.models import CompressionModel
from compressai.zoo import image as zoo_image
from compressai.zoo.pretrained import load_pretrained

METRICS = ("mse", "ms-ssim")

# CompressAI's rate-distortion trade-offs, indexed by quality 1..8.
LAMBDAS = {
    "mse": (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800),
    "ms-ssim": (2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.00),
}


class CodecError(ValueError):
    """A codec cannot be built or loaded as configured; the message says how to fix it."""


def architectures() -> list[str]:
    return sorted(zoo_image.model_architectures)


def qualities(arch: str) -> list[int]:
    check_arch(arch)
    return sorted(zoo_image.cfgs[arch])


def check_arch(arch: str) -> None:
    if arch not in zoo_image.model_architectures:
        raise CodecError(f"unknown codec architecture {arch!r}; choose one of {architectures()}")


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
    check_arch(arch)
    return zoo_image.model_architectures[arch]


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
        return load_codec_checkpoint(arch, checkpoint, expected={"quality": quality, "metric": metric})
    if pretrained:
        return load_pretrained_codec(arch, quality, metric)
    cls = codec_class(arch)
    args = tuple(channels) if channels else zoo_image.cfgs[arch][quality]
    return cls(*args)


def real_channels(codec: CompressionModel, arch: str) -> list[int] | None:
    """The channel counts `codec` was built with, as `channels` / the zoo's constructor takes them:
    (N, M), or (N,) for cheng2020. None for a codec without N."""
    n, m = getattr(codec, "N", None), getattr(codec, "M", None)
    if n is None:
        return None
    arity = len(next(iter(zoo_image.cfgs[arch].values())))
    return [int(n), int(m if m is not None else n)][:arity]


def pretrained_url(arch: str, quality: int, metric: str) -> str:
    urls = zoo_image.model_urls.get(arch, {}).get(metric, {})
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
    except (KeyError, RuntimeError, IndexError) as err:
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
