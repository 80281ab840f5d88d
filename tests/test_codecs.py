"""Codec configs compose and build; names, qualities and metrics are checked with clear errors."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config

from robust_nic.codecs import (
    CodecError,
    build_codec,
    lambda_for,
    load_pretrained_codec,
    pretrained_path,
    pretrained_url,
)
from robust_nic.config import codec_from_settings, resolve

ZOO = {
    "bmshj2018_factorized": ("bmshj2018-factorized", 8),
    "bmshj2018_hyperprior": ("bmshj2018-hyperprior", 8),
    "mbt2018_mean": ("mbt2018-mean", 8),
    "mbt2018": ("mbt2018", 8),
    "cheng2020": ("cheng2020-anchor", 6),
    "cheng2020_attn": ("cheng2020-attn", 6),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_config_composes_and_builds(name):
    arch, top_quality = ZOO[name]
    cfg = compose_config("train", [f"model={name}", "model.pretrained=false", f"model.quality={top_quality}"])
    settings = resolve(cfg)
    assert settings["model"]["arch"] == arch
    assert settings["optim"]["lr"] == 1e-4  # from scratch
    codec = codec_from_settings(settings["model"])
    out = codec(torch.rand(1, 3, 64, 64))
    assert out["x_hat"].shape == (1, 3, 64, 64)


def test_pretrained_zoo_config_finetunes_with_small_lr():
    settings = resolve(compose_config("train", ["model=cheng2020", "loss=ms_ssim", "model.quality=3"]))
    assert settings["model"]["pretrained"] and settings["optim"]["lr"] == 1e-5
    assert settings["model"]["metric"] == "ms-ssim"
    assert settings["loss"]["lmbda"] == lambda_for("ms-ssim", 3) == 8.73


def test_lambda_table_and_override():
    assert lambda_for("mse", 1) == 0.0018 and lambda_for("mse", 8) == 0.18
    settings = resolve(compose_config("train", ["loss.lmbda=0.5"]))
    assert settings["loss"]["lmbda"] == 0.5


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model=cheng2020", "model.quality=7"], "allowed qualities: [1, 2, 3, 4, 5, 6]"),
        (["model.arch=cheng2021"], "choose one of"),
        (["model.metric=psnr"], "choose one of ['mse', 'ms-ssim']"),
        (["loss.metric=l1"], "loss=mse or loss=ms_ssim"),
    ],
)
def test_bad_model_settings_name_the_allowed_values(overrides, expected):
    with pytest.raises(CodecError, match=r".*") as info:
        resolve(compose_config("train", overrides))
    assert expected in str(info.value)


def test_pretrained_offline_says_how_to_proceed(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CodecError) as info:
        build_codec("cheng2020-anchor", 3, pretrained=True)
    assert "model.pretrained=false" in str(info.value) and "model.checkpoint=PATH" in str(info.value)


def test_pretrained_weights_load_from_the_hub_cache(monkeypatch, tmp_path):
    """The download path's loader, fed a local file placed where torch.hub caches it."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = build_codec("bmshj2018-factorized", 1)
    reference.update(force=True)
    path = pretrained_path(pretrained_url("bmshj2018-factorized", 1, "mse"))
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    loaded = load_pretrained_codec("bmshj2018-factorized", 1, "mse").eval()
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x)["x_hat"], reference.eval()(x)["x_hat"])


def test_codecs_import_after_compressai_eval_model():
    """eval_model adds its -vbr models (no per-quality configs) to the zoo's dict at import: the registry
    must skip them, whichever module a script imports first (bench/coding_vs_compressai.py does this)."""
    import subprocess
    import sys

    script = (
        "import compressai.utils.eval_model.__main__\n"
        "from robust_nic.codecs import CODECS, build_codec\n"
        "assert 'bmshj2018-hyperprior' in CODECS.names() and not any('vbr' in n for n in CODECS.names())\n"
        "build_codec('bmshj2018-hyperprior', 1, channels=[8, 8])\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
