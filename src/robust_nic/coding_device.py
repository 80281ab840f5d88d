"""Where entropy coding runs (`coding.device`): attacks and training stay on the accelerator, while codecs
with a context model (mbt2018, cheng2020) are coded on a CPU copy with `auto`.

CompressAI advises against GPU inference for the autoregressive models: their context model runs once per
latent pixel, and a bit of difference between the encoder's and the decoder's entropy parameters
desynchronises the range decoder (a known CompressAI problem on GPUs). The other codecs are coded on the
accelerator under deterministic kernels (coding.deterministic_kernels). On a CPU-only machine every
setting codes where the image is, as before.
"""

from __future__ import annotations

import copy
import weakref

import torch

from robust_nic.settings import ConfigError

CODING_DEVICES = ("auto", "cpu", "same")
_setting = {"device": "auto"}


class CodingDeviceError(ConfigError):
    """An unknown coding.device value."""


def set_coding_device(setting: str | None) -> None:
    """The process's coding.device (train.py and evaluate.py set it from their config)."""
    value = setting or "auto"
    if value not in CODING_DEVICES:
        raise CodingDeviceError(f"coding.device={value!r}: choose one of {', '.join(CODING_DEVICES)}")
    _setting["device"] = value


def has_context_model(codec: torch.nn.Module) -> bool:
    return any(hasattr(module, "context_prediction") for module in codec.modules())


def coding_device(codec: torch.nn.Module, device: torch.device, setting: str | None = None) -> torch.device:
    """Where `codec` entropy-codes an image that lives on `device`."""
    setting = setting or _setting["device"]
    if setting == "cpu" or (setting == "auto" and has_context_model(codec)):
        return torch.device("cpu")
    return device


def weights_version(codec: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is written (optimizer steps, load_state_dict, update()):
    torch counts every in-place write of a tensor, and a replaced tensor has another storage."""
    tensors = [*codec.parameters(), *codec.buffers()]
    return tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in tensors)


class CpuCopies:
    """One CPU copy per codec, made on first use and made again whenever the codec's weights changed."""

    def __init__(self):
        self._copies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, codec: torch.nn.Module) -> torch.nn.Module:
        version = weights_version(codec)
        held = self._copies.get(codec)
        if held is None or held[0] != version:
            # deepcopy then move: the original's tensors stay where they are
            held = (version, copy.deepcopy(codec).cpu())
            self._copies[codec] = held
        return held[1]


CPU_COPIES = CpuCopies()


def coder_and_input(codec: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
    """The module that codes `x` and `x` where it runs: the codec itself, or its CPU copy."""
    target = coding_device(codec, x.device)
    if target == x.device:
        return codec, x
    return CPU_COPIES.get(codec), x.to(target)
