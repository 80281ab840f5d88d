"""Every way a codec turns an image into a reconstruction, in one place (attacks, training and evaluation).

    way          how                                        differentiable in x   rates
    bitstream    coding.code(codec, x) -> Coded             no (real coder)       real bits + estimate
    rounded      rounded_reconstruction(codec, x)           no (zero gradient)    -
    "ste"        reconstruct(codec, x, "ste")               yes (identity)        likelihoods
    "noise"      reconstruct(codec, x, "noise", generator)  yes                   likelihoods
    "skip"       smooth_reconstruction(codec, x)            yes                   none (not rates)

"ste", "noise" and "skip" are proxies of the quantization: differentiable stand-ins applied to a frozen
codec. In eval() CompressAI rounds the latents, so d x_hat / d x is exactly zero. `patched_quantize` is the
one dispatcher, for both layouts:
- classic (entropy_bottleneck / gaussian_conditional): `quantize` of every entropy module is patched
  (instead of flipping `training`), which also covers mbt2018 and cheng2020, whose forward picks the mode
  from the model's own `training` flag, and any wrapper module (defenses) that contains a codec;
- latent codecs (ELIC, checkerboard) and the variable-rate models round their latents with
  `compressai.ops.quantize_ste` called from their own modules (and the checkerboard one-pass forward with
  its `quantize`): those are redirected too while the block runs.
`Surrogate` keeps one proxy active over many forwards (the attack loop).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from compressai.entropy_models import EntropyModel
from torch import nn

from robust_nic.coding import Coded, code, crop, forward_padded, pad
from robust_nic.scoped import eval_mode, patched
from robust_nic.settings import PROXIES, ConfigError

__all__ = [
    "PROXIES",
    "PROXIES_WITH_LIKELIHOODS",
    "Coded",
    "ProxyError",
    "Surrogate",
    "check_proxy",
    "code",
    "entropy_modules",
    "patched_quantize",
    "reconstruct",
    "rounded_reconstruction",
    "smooth_reconstruction",
]

# Proxies whose forward yields likelihoods (a rate objective needs them).
PROXIES_WITH_LIKELIHOODS = ("noise", "ste", "none")


class ProxyError(ConfigError):
    """A quantization proxy that is unknown or cannot serve the requested objective."""


def check_proxy(proxy: str) -> None:
    if proxy not in PROXIES:
        raise ProxyError(f"unknown attack.proxy {proxy!r}; choose one of {list(PROXIES)}")


def _identity(inputs: torch.Tensor, means: torch.Tensor | None) -> torch.Tensor:
    return inputs


def _ste(inputs: torch.Tensor, means: torch.Tensor | None) -> torch.Tensor:
    # Forward value = the real decoder's rounding (around the means); backward = identity.
    centre = inputs if means is None else inputs - means
    return inputs + (torch.round(centre) - centre).detach()


def _noise(generator: torch.Generator | None):
    def quantize(inputs: torch.Tensor, means: torch.Tensor | None) -> torch.Tensor:
        # CompressAI's training proxy (it ignores the means too), seeded through our generator.
        noise = torch.rand(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
        return inputs + (noise - 0.5)

    return quantize


def entropy_modules(module: nn.Module) -> list[EntropyModel]:
    return [m for _, m in module.named_modules() if isinstance(m, EntropyModel)]


def _ste_call_sites(module: nn.Module) -> list:
    """The Python modules whose `quantize_ste` rounds latents of `module` (none for the classic layout)."""
    from compressai.latent_codecs import LatentCodec, checkerboard, gaussian_conditional, hyper
    from compressai.models import vbr

    sites = []
    if any(isinstance(m, LatentCodec) for m in module.modules()):
        sites += [checkerboard, gaussian_conditional, hyper]
    if any(isinstance(m, vbr.ScaleHyperpriorVbr) for m in module.modules()):
        sites.append(vbr)
    return sites


def _patched_ste(stack: contextlib.ExitStack, module: nn.Module, replacement) -> None:
    """`quantize_ste(x)` (rounding of centred latents) -> `replacement(x)` in the latent-codec layout."""
    from compressai.latent_codecs import CheckerboardLatentCodec

    for site in _ste_call_sites(module):
        stack.enter_context(patched(site, "quantize_ste", lambda x, *_: replacement(x, None)))
    for m in module.modules():
        if isinstance(m, CheckerboardLatentCodec):
            stack.enter_context(patched(m, "quantize", lambda y: replacement(y, None)))


@contextlib.contextmanager
def patched_quantize(
    module: nn.Module, proxy: str, generator: torch.Generator | None = None
) -> Iterator[None]:
    """Inside the block, the latent quantization of every entropy module in `module` follows `proxy`,
    and so does the latent codecs' own rounding (`quantize_ste`).

    Both "noise" and "dequantize" modes are redirected, so the codec's train/eval flag does not matter;
    "symbols" (real coding) is left alone. On exit each module holds what it held before (scoped.patched).
    """
    check_proxy(proxy)
    if proxy == "none":
        yield
        return
    replacement = {"skip": _identity, "ste": _ste, "noise": _noise(generator)}[proxy]
    with contextlib.ExitStack() as stack:
        for entropy_module in entropy_modules(module):
            original = entropy_module.quantize  # the class's method or an earlier patch

            def quantize(inputs, mode, means=None, _original=original):
                if mode in ("noise", "dequantize"):
                    return replacement(inputs, means)
                return _original(inputs, mode, means)

            stack.enter_context(patched(entropy_module, "quantize", quantize))
        _patched_ste(stack, module, replacement)
        yield


class Surrogate:
    """A differentiable codec: `surrogate(x) -> {"x_hat", "likelihoods"}` for any H, W, under `proxy`.

    `skip` runs g_s(g_a(x)) when the module exposes them (the paper's proxy; no likelihoods), otherwise
    the module's forward with quantization as identity. Use inside `surrogate.active()`.
    """

    def __init__(self, module: nn.Module, proxy: str, generator: torch.Generator | None = None):
        check_proxy(proxy)
        self.module = module
        self.proxy = proxy
        self.generator = generator
        self.direct_skip = proxy == "skip" and hasattr(module, "g_a") and hasattr(module, "g_s")

    @contextlib.contextmanager
    def active(self) -> Iterator[Surrogate]:
        with eval_mode(self.module), patched_quantize(self.module, self.proxy, self.generator):
            yield self

    def __call__(self, x: torch.Tensor) -> dict:
        if self.direct_skip:
            x_padded, unpad = pad(x)
            return {"x_hat": crop(self.module.g_s(self.module.g_a(x_padded)), unpad), "likelihoods": None}
        out = forward_padded(self.module, x)
        if self.proxy == "skip":
            out = {**out, "likelihoods": None}  # likelihoods of unquantized latents are not rates
        return out


def reconstruct(
    codec: nn.Module, x: torch.Tensor, proxy: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """x_hat of the frozen codec under `proxy`, differentiable in x (unless grad is off or proxy="none")."""
    surrogate = Surrogate(codec, proxy, generator)
    with surrogate.active():
        return surrogate(x)["x_hat"]


@torch.no_grad()
def rounded_reconstruction(codec: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The codec's eval-mode forward (latents rounded as the real decoder does; no bitstream, no 8-bit
    rounding of the input or output). Cheaper than `code` when only the reconstruction is needed."""
    with eval_mode(codec):
        return forward_padded(codec, x)["x_hat"]


@torch.no_grad()
def smooth_reconstruction(codec: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """g_s(g_a(x)) without rounding the latents: what the codec's transforms alone make of x."""
    return reconstruct(codec, x, "skip")
