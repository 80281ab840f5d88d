"""The real coding path: odd sizes, bitstream bpp vs estimate, checkpoints, CompressAI's own evaluator."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import photo

from robust_nic.codecs import export_codec, load_codec_checkpoint
from robust_nic.coding import code
from robust_nic.images import write_png
from robust_nic.metrics import psnr


class Payload:
    """An arbitrary Python object: loading it would need pickle to run code."""


def odd_image() -> torch.Tensor:
    return torch.from_numpy(photo("chelsea.png")[100:170, 150:240]).permute(2, 0, 1)[None].float() / 255


def test_odd_size_round_trip_and_bpp_matches_estimate(small_codec):
    x = odd_image()
    coded = code(small_codec, x)
    assert coded.x_hat.shape == x.shape
    assert psnr(x, coded.x_hat).item() > 14  # briefly trained; an untrained codec gives ~5-12 dB
    ratio = coded.bpp.item() / coded.bpp_est.item()
    assert 0.8 < ratio < 1.5, ratio
    # x_hat is 8-bit: a real image
    assert torch.equal(coded.x_hat, (coded.x_hat * 255).round() / 255)


def test_plain_state_dict_reload_after_update_keeps_bpp(small_codec, tmp_path):
    x = odd_image()
    before = code(small_codec, x)
    path = export_codec(small_codec, tmp_path / "codec.pth.tar")
    reloaded = load_codec_checkpoint("bmshj2018-hyperprior", path)
    after = code(reloaded, x)
    assert torch.equal(before.bpp, after.bpp) and torch.equal(before.x_hat, after.x_hat)


def test_checkpoint_variants_and_wrong_architecture(small_codec, tmp_path):
    import pytest

    from robust_nic.codecs import CodecError

    state = small_codec.state_dict()
    for key in ("state_dict", "network"):
        torch.save({key: state, "epoch": 3}, tmp_path / f"{key}.pth")
        load_codec_checkpoint("bmshj2018-hyperprior", tmp_path / f"{key}.pth")
    with pytest.raises(CodecError, match="another architecture"):
        load_codec_checkpoint("cheng2020-anchor", tmp_path / "network.pth")
    with pytest.raises(CodecError, match="does not exist"):
        load_codec_checkpoint("bmshj2018-hyperprior", tmp_path / "missing.pth")


def test_checkpoint_that_needs_pickle_is_refused(tmp_path):
    import pytest

    from robust_nic.codecs import CodecError

    torch.save({"state_dict": Payload()}, tmp_path / "unsafe.ckpt")
    with pytest.raises(CodecError, match="weights_only"):
        load_codec_checkpoint("bmshj2018-hyperprior", tmp_path / "unsafe.ckpt")


def test_compressai_eval_model_reproduces_our_numbers(small_codec, tmp_path):
    images = tmp_path / "images"
    # CompressAI's evaluator computes MS-SSIM, which needs more than 160 px per side.
    x = torch.from_numpy(photo("chelsea.png")[60:231, 120:325]).permute(2, 0, 1)[None].float() / 255
    write_png(x[0], images / "chelsea.png")
    ours = code(small_codec, x)
    path = export_codec(small_codec, tmp_path / "codec.pth.tar")
    out = subprocess.run(
        [sys.executable, "-m", "compressai.utils.eval_model", "checkpoint", str(images),
         "-a", "bmshj2018-hyperprior", "-p", str(path)],
        capture_output=True, text=True, check=True,
    )
    theirs = json.loads(out.stdout[out.stdout.index("{"):])["results"]
    assert abs(theirs["bpp"][0] - ours.bpp.item()) < 1e-9
    assert abs(theirs["psnr-rgb"][0] - psnr(x, ours.x_hat).item()) < 1e-3


class DecoderSidePerturbation:
    """Adds `offset` to the hyperprior synthesis (h_s) output during decompress only.

    This is what non-deterministic GPU kernels do: the decoder's entropy parameters differ from the ones
    the encoder used, and the real range decoder reads the bitstream with the wrong CDFs.
    """

    def __init__(self, codec, offset: float, from_channel: int = 0):
        self.codec, self.active = codec, False
        self.hook = codec.h_s.register_forward_hook(lambda m, i, out: self.perturb(out, offset, from_channel))
        original = codec.decompress

        def decompress(*args):
            self.active = True
            try:
                return original(*args)
            finally:
                self.active = False

        codec.decompress = decompress

    def perturb(self, out, offset, from_channel):
        if not self.active:
            return out
        return torch.cat([out[:, :from_channel], out[:, from_channel:] + offset], 1)

    def remove(self):
        self.hook.remove()
        del self.codec.decompress


def test_decoder_side_desync_raises_and_names_the_cure(small_codec):
    import pytest

    from robust_nic.codecs import build_codec
    from robust_nic.coding import CodingMismatchError

    x = odd_image()
    expected = code(small_codec, x)  # the normal path passes the self-check
    perturbation = DecoderSidePerturbation(small_codec, offset=0.5)
    try:
        with pytest.raises(CodingMismatchError, match=r"desynchronised in 'gaussian_conditional'.*device=cpu"):
            code(small_codec, x)
    finally:
        perturbation.remove()
    assert torch.equal(code(small_codec, x).x_hat, expected.x_hat)

    torch.manual_seed(0)
    mean_scale = build_codec("mbt2018-mean", 3, channels=[16, 24]).eval()
    code(mean_scale, x[..., :64, :64], update=True)
    # Offsetting only the means (the second half of h_s's channels) decodes the same symbols into
    # different latents: caught too.
    DecoderSidePerturbation(mean_scale, offset=0.01, from_channel=24)
    with pytest.raises(CodingMismatchError, match="latents of 'gaussian_conditional' differ"):
        code(mean_scale, x[..., :64, :64])


def test_coding_runs_with_deterministic_kernels_and_restores_the_flags(small_codec):
    import pytest

    from robust_nic.coding import deterministic_kernels

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = False, True, True, True
        seen = []
        hook = small_codec.h_s.register_forward_hook(
            lambda *_: seen.append((cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32))
        )
        try:
            code(small_codec, odd_image())
        finally:
            hook.remove()
        assert seen and all(flags == (True, False, False, False) for flags in seen)
        assert (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32) == (False, True, True, True)
        with pytest.raises(KeyError), deterministic_kernels():
            raise KeyError("boom")
        assert (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32) == (False, True, True, True)
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def test_a_nan_input_is_refused_not_coded(small_codec):
    """CompressAI's range coder never returns on NaN latents; the coding path refuses them at once."""
    import pytest

    from robust_nic.coding import NonFiniteInputError, code

    x = torch.rand(1, 3, 64, 64)
    x[0, 0, 3, 5] = float("nan")
    with pytest.raises(NonFiniteInputError, match="1 non-finite"):
        code(small_codec, x)


SMALL_CHANNELS = {
    "bmshj2018-factorized": [16, 24],
    "bmshj2018-hyperprior": [16, 24],
    "mbt2018-mean": [16, 24],
    "mbt2018": [16, 24],
    "cheng2020-anchor": [16],
    "cheng2020-checkerboard": [16],
    "elic2022-official": [16, 40],
    "elic2022-chandelier": [16, 40],
    "bmshj2018-hyperprior-vbr": [16, 24],
    "mbt2018-mean-vbr": [16, 24],
}


def test_bpp_est_equals_the_full_forward_estimate_without_a_second_synthesis():
    """bpp_est comes from the latents compress made: the same values as the likelihoods of a full
    codec(x) forward (what code() computed before), with g_a and g_s run once each (compress, decompress)."""
    from robust_nic.codecs import build_codec
    from robust_nic.coding import bpp_from_likelihoods, pad
    from robust_nic.metrics import to_8bit

    x = torch.from_numpy(photo("coffee.png")[100:170, 200:290]).permute(2, 0, 1)[None].float() / 255
    x = torch.cat([x, x.flip(-1)])  # a batch of two different images
    for arch, channels in SMALL_CHANNELS.items():
        torch.manual_seed(0)
        codec = build_codec(arch, 3, channels=channels).eval()
        codec.update(force=True)
        with torch.no_grad():
            x_padded, _ = pad(to_8bit(x))
            expected = bpp_from_likelihoods(codec(x_padded)["likelihoods"], x.shape[-2] * x.shape[-1]).double()
        calls = {"g_a": 0, "g_s": 0}
        for name in calls:

            def count(module, inputs, output, name=name, calls=calls):
                calls[name] += 1

            getattr(codec, name).register_forward_hook(count)
        coded = code(codec, x)
        assert torch.equal(coded.bpp_est, expected), (arch, coded.bpp_est, expected)
        assert calls == {"g_a": 1, "g_s": 1}, (arch, calls)


def test_context_model_codecs_are_coded_from_a_contiguous_tensor():
    """read_image gives a channels-last view; mbt2018's per-latent-pixel loops ran 5 % slower on it
    (bench/results/coding_vs_compressai_cpu.json), so code() hands context models the standard layout and
    leaves the others' (whose big transforms ran faster channels-last) as it is."""
    from robust_nic.codecs import build_codec

    torch.manual_seed(0)
    x = torch.rand(1, 64, 64, 3).permute(0, 3, 1, 2)  # the layout read_image(path)[None] has
    seen = {}
    for arch in ("mbt2018", "mbt2018-mean"):
        codec = build_codec(arch, 1, channels=[8, 8]).eval()
        record = seen.setdefault(arch, [])
        codec.g_a.register_forward_pre_hook(lambda m, args, record=record: record.append(args[0].is_contiguous()) or None)
        code(codec, x)
    assert seen["mbt2018"] and all(seen["mbt2018"]) and not any(seen["mbt2018-mean"])


@pytest.mark.parametrize("arch", ["bmshj2018-hyperprior-vbr", "mbt2018-mean-vbr"])
def test_variable_rate_codecs_code_at_the_rate_model_quality_selects(arch):
    """Quality q codes at CompressAI's rate index q - 1: higher quality, more bits; bitstream and estimate agree;
    the decoded symbols are checked although the decoder adds the means itself."""
    from robust_nic.codecs import build_codec

    x = torch.from_numpy(photo("coffee.png")[100:228, 200:328]).permute(2, 0, 1)[None].float() / 255
    torch.manual_seed(0)
    codec = build_codec(arch, 1, channels=[16, 24])
    with torch.no_grad():
        codec.g_a[-1].weight *= 100  # latents of a trained codec's size (untrained ones all round to 0)
    bpp = {}
    for quality in (1, 8):
        codec.use_quality(quality)
        assert codec.rate_index == quality - 1
        coded = code(codec, x, update=True)
        assert abs(coded.bpp.item() - coded.bpp_est.item()) < 0.25 * coded.bpp.item() + 0.05  # untrained: loose
        bpp[quality] = coded.bpp.item()
    assert bpp[8] > bpp[1] > 0
