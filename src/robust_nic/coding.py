"""The one real coding path: pad to a multiple of 64, entropy-code, decode, crop; bpp from the bitstream."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyModel
from compressai.models import CompressionModel
from compressai.ops import compute_padding

from robust_nic.coding_device import coder_and_input
from robust_nic.metrics import to_8bit
from robust_nic.scoped import eval_mode, patched

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


class NonFiniteInputError(ValueError):
    """An input with NaN/inf values was handed to the entropy coder."""


class CodingMismatchError(RuntimeError):
    """The decoder's latents differ from the encoder's: the bitstream decoded to something else."""


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Deterministic cuDNN, no TF32, restored afterwards (also on errors); nothing changes on CPU.

    The hyperprior's entropy parameters are computed by `compress` and again by `decompress`; any bit of
    difference between the two (non-deterministic cuDNN algorithms, TF32 matmuls) can pick another CDF,
    and the range decoder then desynchronises (https://github.com/InterDigitalInc/CompressAI/issues/54). CompressAI's own evaluator sets
    cudnn.deterministic for the same reason.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = True, False, False, False
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


# Latent values may differ by float rounding only (e.g. means recomputed by a different kernel); a
# thousandth of a quantisation step cannot change a reconstruction's 8-bit pixels in practice.
LATENT_TOLERANCE = 1e-3


@dataclass
class _Recorded:
    """Per call, as handed over (mbt2018 calls once per latent pixel: conversions wait for `check`)."""

    symbols: list = field(default_factory=list)  # integer symbols (decoder side: float, before dequantize)
    values: list = field(default_factory=list)  # decoder side: dequantised latents
    means: list = field(default_factory=list)  # encoder side: the means the symbols are relative to, or None

    def all_symbols(self) -> torch.Tensor:
        return torch.cat([s.reshape(-1) for s in self.symbols]).round().int().cpu()

    def encoded_values(self) -> torch.Tensor:
        return torch.cat(
            [(s.float() + (0 if m is None else m)).reshape(-1) for s, m in zip(self.symbols, self.means, strict=True)]
        ).cpu()

    def decoded_values(self) -> torch.Tensor:
        return torch.cat([v.reshape(-1) for v in self.values]).float().cpu()


class LatentRecorder:
    """Records what every entropy model of a codec encodes and decodes, to compare the two sides.

    All CompressAI entropy models turn latents into symbols with `quantize(..., "symbols", means)` when
    encoding and back with `dequantize(symbols, means)` when decoding; this holds for the factorized
    prior, the (mean-)scale hyperpriors and also for mbt2018's autoregressive per-pixel loop, which calls
    the same two methods of its GaussianConditional. The recorder shadows the two methods on each entropy
    model instance (the class is untouched) while `phase` says which side is running. The encoder decodes
    z itself (to compute the scales the decoder will see); those calls are recorded on the encoder side
    as decodes and not compared.
    """

    def __init__(self, codec: torch.nn.Module):
        self.models = {name or "entropy": m for name, m in codec.named_modules() if isinstance(m, EntropyModel)}
        self.encoded = {name: _Recorded() for name in self.models}
        self.decoded = {name: _Recorded() for name in self.models}
        self.phase = "idle"

    def __enter__(self) -> LatentRecorder:
        self.patches = contextlib.ExitStack()  # earlier patches (e.g. an attack's proxy) come back on exit
        for name, model in self.models.items():
            self.patches.enter_context(patched(model, "quantize", self._quantize(name, model.quantize)))
            self.patches.enter_context(patched(model, "dequantize", self._dequantize(name, model.dequantize)))
        return self

    def __exit__(self, *exc) -> None:
        self.patches.close()

    def _quantize(self, name, original):
        def quantize(inputs, mode, means=None):
            out = original(inputs, mode, means)
            if mode == "symbols" and self.phase == "encode":
                self.encoded[name].symbols.append(out.detach().clone())
                self.encoded[name].means.append(None if means is None else means.detach().clone())
            return out

        return quantize

    def _dequantize(self, name, original):
        def dequantize(inputs, means=None, dtype=torch.float):
            if self.phase == "decode":  # a copy before the call: dequantize may add the means in place
                self.decoded[name].symbols.append(inputs.detach().clone())
                self.decoded[name].means.append(means)
            out = original(inputs, means, dtype)
            if self.phase == "decode":
                self.decoded[name].values.append(out.detach().clone())
            return out

        return dequantize

    def check(self) -> None:
        """Raise CodingMismatchError unless each entropy model decoded exactly what was encoded."""
        for name in self.models:
            enc, dec = self.encoded[name], self.decoded[name]
            if not enc.symbols and not dec.symbols:
                continue  # an entropy model this codec does not code with
            enc_symbols, dec_symbols = enc.all_symbols(), dec.all_symbols()
            if enc_symbols.shape != dec_symbols.shape or not torch.equal(enc_symbols, dec_symbols.to(enc_symbols)):
                wrong = (
                    "a different number of symbols"
                    if enc_symbols.shape != dec_symbols.shape
                    else f"{(enc_symbols != dec_symbols).sum().item()} of {enc_symbols.numel()} symbols wrong"
                )
                raise CodingMismatchError(
                    f"entropy decoding desynchronised in {name!r} ({wrong}): the decoder's entropy parameters "
                    "differ from the encoder's. This happens with non-deterministic accelerator kernels; "
                    "code on the CPU (device=cpu) to get a valid bitstream."
                )
            if any(m is not None for m in enc.means) and all(m is None for m in dec.means):
                continue  # the decoder adds the means itself (the -vbr models): the symbols are what is coded
            diff = (enc.encoded_values() - dec.decoded_values()).abs().max().item()
            if not diff <= LATENT_TOLERANCE:  # NaN fails too
                raise CodingMismatchError(
                    f"the decoded latents of {name!r} differ from the encoder's by up to {diff:.3g} (tolerance "
                    f"{LATENT_TOLERANCE}): the decoder's means differ from the encoder's. Code on the CPU "
                    "(device=cpu) to get a faithful reconstruction."
                )


class EncoderOutputs:
    """Keeps what `compress` computed, so that bpp_est needs no second pass through the analysis and
    synthesis transforms (they are most of the work: a full `codec(x)` for bpp_est made code() ~1.6x
    CompressAI's compress + decompress). For the latent-codec API (ELIC, checkerboard) `g_a` is replayed
    and the latent codec's own forward gives the likelihoods.

    While active, forward hooks record the outputs of `g_a` (the latents y) and `h_a` (the hyper-latents
    z) during compress. `likelihoods(x)` then runs the codec's own forward with `g_a` and `h_a` replaying
    those outputs and `g_s` skipped (its x_hat is not used): the entropy models, h_s and the context model
    compute exactly what `codec(x)["likelihoods"]` computes, in the same eval-mode way. This holds only
    for the CompressAI forward/compress pairs checked in tests/test_coding.py (the bmshj2018, mbt2018 and
    cheng2020 families, SimpleVAECompressionModel's and the rate-indexed -vbr models'); any other codec (or one whose forward or compress is overridden) gets the plain
    full forward.
    """

    REPLAYED = ("g_a", "h_a")

    def __init__(self, codec: torch.nn.Module):
        self.codec = codec
        cls = type(codec)
        self.replayable = cls.forward in _REPLAYABLE_FORWARDS and cls.compress in _REPLAYABLE_COMPRESS
        self.outputs: dict[str, list[torch.Tensor]] = {name: [] for name in self.REPLAYED}

    def __enter__(self) -> EncoderOutputs:
        self.hooks = []
        if self.replayable:
            for name in self.REPLAYED:
                module = getattr(self.codec, name, None)
                if module is not None:
                    record = self.outputs[name].append
                    self.hooks.append(module.register_forward_hook(lambda m, i, out, record=record: record(out.clone())))
        return self

    def __exit__(self, *exc) -> None:
        for hook in self.hooks:
            hook.remove()

    def likelihoods(self, x_padded: torch.Tensor) -> dict:
        """The likelihoods of `codec(x_padded)` (eval mode), from the recorded latents where possible."""
        recorded = {name: out for name, out in self.outputs.items() if out}
        if not self.replayable or not recorded or any(len(out) != 1 for out in recorded.values()):
            return self.codec(x_padded)["likelihoods"]
        stand_ins = {name: _Replay(out[0]) for name, out in recorded.items()}
        stand_ins["g_s"] = _Skip()
        saved = {name: self.codec._modules[name] for name in stand_ins}
        try:
            self.codec._modules.update(stand_ins)
            return self.codec(x_padded)["likelihoods"]
        finally:
            self.codec._modules.update(saved)


class _Replay(torch.nn.Module):
    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output

    def forward(self, *args) -> torch.Tensor:
        return self.output


class _Skip(torch.nn.Module):
    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return y_hat  # stands in for x_hat, which likelihoods() does not use


def _replayable_methods(name: str) -> set:
    from compressai.models import SimpleVAECompressionModel, google, waseda

    classes = (
        SimpleVAECompressionModel,  # the latent-codec API (ELIC, checkerboard): g_a, latent_codec, g_s
        google.FactorizedPrior,
        google.FactorizedPriorReLU,
        google.ScaleHyperprior,
        google.MeanScaleHyperprior,
        google.JointAutoregressiveHierarchicalPriors,
        waseda.Cheng2020Anchor,
        waseda.Cheng2020Attention,
    )
    from robust_nic.latent_codecs import VARIABLE_RATE_BASE

    return {getattr(cls, name) for cls in (*classes, VARIABLE_RATE_BASE)}


_REPLAYABLE_FORWARDS = _replayable_methods("forward")
_REPLAYABLE_COMPRESS = _replayable_methods("compress")


@torch.no_grad()
def code(codec: CompressionModel, x: torch.Tensor, update: bool = False, deterministic: bool = True) -> Coded:
    """Code a batch of [0,1] images (rounded to 8 bits first) with the real entropy coder.

    The codec is used in eval mode; every submodule's mode is restored afterwards. `update=True` rebuilds the
    CDFs (call it once after the weights change; validation does). Coding runs with deterministic
    kernels (`deterministic=False` keeps the process's settings: for measuring what that prevents), and the
    decoded latents are checked against the encoded ones (CodingMismatchError). It codes where
    coding_device says (coding.device); x_hat comes back on x's device.
    """
    if not torch.isfinite(x).all():
        # CompressAI's range coder never returns on NaN latents (measured: a hang); callers that measure
        # broken inputs record them as NaN instead of coding them (evaluation.measure.not_coded).
        raise NonFiniteInputError(
            f"{int((~torch.isfinite(x)).sum())} non-finite (NaN/inf) input values: they cannot be entropy-coded"
        )
    device = x.device
    codec, x = coder_and_input(codec, x)  # coding.device: a context model codes on a CPU copy (auto)
    with eval_mode(codec):
        with deterministic_kernels() if deterministic else contextlib.nullcontext():
            if update:
                codec.update(force=True)
            else:
                ensure_updated(codec)
            x = to_8bit(x)
            if hasattr(codec, "context_prediction") or hasattr(codec, "latent_codec") or hasattr(codec, "rate_index"):
                # The autoregressive models' per-latent-pixel loops ran 5 % slower on channels-last tensors
                # (read_image's layout, which the big transforms of the other models prefer): measured,
                # bench/results/coding_vs_compressai_cpu.json. The latent codecs' masked and grouped context
                # convolutions get a contiguous input too, and so do the -vbr models: their latents, scaled by the
                # rate's gain, crossed a rounding boundary on a channels-last input where CompressAI's evaluator
                # (contiguous) did not (one image of bench/results/coding_vs_compressai_new_codecs_cpu.json).
                x = x.contiguous()
            num_pixels = x.shape[-2] * x.shape[-1]
            x_padded, unpad = pad(x)
            with LatentRecorder(codec) as recorder, EncoderOutputs(codec) as encoder:
                sync(x)
                start = time.perf_counter()
                recorder.phase = "encode"
                enc = codec.compress(x_padded)
                sync(x)
                encode_s = time.perf_counter() - start
                start = time.perf_counter()
                recorder.phase = "decode"
                dec = codec.decompress(enc["strings"], enc["shape"])
                sync(x)
                decode_s = time.perf_counter() - start
                recorder.phase = "idle"
            recorder.check()
            x_hat = to_8bit(crop(dec["x_hat"], unpad)).to(device)
            bits = torch.tensor(
                [sum(len(stream[i]) for stream in enc["strings"]) * 8.0 for i in range(x.shape[0])],
                dtype=torch.float64,
            )
            bpp_est = bpp_from_likelihoods(encoder.likelihoods(x_padded), num_pixels).double().cpu()
    return Coded(x_hat, bits / num_pixels, bpp_est, encode_s, decode_s, enc["strings"], enc["shape"])


def sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
