"""Codec configs compose and build; names, qualities and metrics are checked with clear errors."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config, run_script

from robust_nic.codecs import (
    CodecError,
    build_codec,
    lambda_for,
    load_pretrained_codec,
    pretrained_path,
    pretrained_url,
)
from robust_nic.config import ConfigError, codec_from_settings, resolve

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
    codec = codec_from_settings(settings)
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
    with pytest.raises(ConfigError, match=r".*") as info:  # CodecError for the codec's own rules
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
    must skip them (its own rate-indexed -vbr classes register instead), whichever module a script imports
    first (bench/coding_vs_compressai.py does this)."""
    import subprocess
    import sys

    script = (
        "import compressai.utils.eval_model.__main__\n"
        "from robust_nic.codecs import CODECS, build_codec, codec_class\n"
        "assert 'bmshj2018-hyperprior' in CODECS.names() and 'mbt2018-vbr' not in CODECS.names()\n"
        "assert codec_class('bmshj2018-hyperprior-vbr').__module__ == 'robust_nic.latent_codecs'\n"
        "build_codec('bmshj2018-hyperprior', 1, channels=[8, 8])\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


NEW_CODECS = {
    "elic2022-official": [16, 40],
    "elic2022-chandelier": [16, 40],
    "cheng2020-checkerboard": [16],
    "bmshj2018-hyperprior-vbr": [16, 24],
    "mbt2018-mean-vbr": [16, 24],
}


@pytest.mark.parametrize("arch", sorted(NEW_CODECS))
def test_quantization_proxies_reach_the_latent_codecs(arch):
    """ste's forward value is the decoder's rounding; noise and skip change it; all three pass gradients."""
    from robust_nic.reconstruction import reconstruct, rounded_reconstruction

    torch.manual_seed(0)
    codec = build_codec(arch, 3, channels=NEW_CODECS[arch])
    with torch.no_grad():
        last_conv = [m for m in codec.g_a.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last_conv.weight *= 20  # latents large enough to round to several values
    x = torch.rand(1, 3, 40, 56, requires_grad=True)
    rounded = rounded_reconstruction(codec, x)
    outputs = {}
    for proxy in ("ste", "noise", "skip"):
        out = reconstruct(codec, x, proxy, generator=torch.Generator().manual_seed(0))
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.abs().sum() > 0, proxy
        outputs[proxy] = out.detach()
    assert torch.allclose(outputs["ste"], rounded, atol=1e-5)
    assert not torch.allclose(outputs["noise"], rounded, atol=1e-3)
    assert not torch.allclose(outputs["skip"], rounded, atol=1e-3)


@pytest.mark.parametrize("arch", sorted(NEW_CODECS))
def test_new_codecs_reload_from_their_state_dict_with_their_channels(arch):
    from robust_nic.codecs import codec_from_state_dict, real_channels

    codec = build_codec(arch, 3, channels=NEW_CODECS[arch])
    reloaded = codec_from_state_dict(arch, codec.state_dict(), source="memory")
    assert type(reloaded) is type(codec) and real_channels(reloaded, arch) == NEW_CODECS[arch]
    for key, value in codec.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_unsupported_or_foreign_elic_weights_are_refused_by_name():
    from robust_nic.codecs import codec_from_state_dict

    with pytest.raises(CodecError, match="model.arch=mbt2018-vbr is not supported"):
        build_codec("mbt2018-vbr", 3)
    published = {"g_a.0.weight": torch.zeros(192, 3, 5, 5), "cc_transforms.0.0.weight": torch.zeros(1)}
    with pytest.raises(CodecError, match="published ELIC re-implementation"):
        codec_from_state_dict("elic2022-official", published, source="elic.pth")
    with pytest.raises(CodecError, match="no pretrained elic2022-official weights"):
        build_codec("elic2022-official", 3, pretrained=True)
    assert pretrained_url("mbt2018-mean-vbr", 3, "mse") == pretrained_url("mbt2018-mean-vbr", 8, "mse")  # one model
    with pytest.raises(CodecError, match="does not hold elic2022-official weights"):
        codec_from_state_dict("elic2022-official", build_codec("bmshj2018-hyperprior", 1).state_dict(), source="x")


# model config, channels of a small CPU configuration
NEW_CODEC_CONFIGS = {
    "elic": ["model.channels=[16,40]"],
    "elic_chandelier": ["model=elic", "model.arch=elic2022-chandelier", "model.channels=[16,40]"],
    "cheng2020_checkerboard": ["model.channels=[16]"],
    "bmshj2018_hyperprior_vbr": ["model.channels=[16,24]"],
    "mbt2018_mean_vbr": ["model.channels=[16,24]"],
}


def new_codec_args(name: str) -> list[str]:
    args = NEW_CODEC_CONFIGS[name]
    return (args if args[0].startswith("model=") else [f"model={name}", *args]) + ["model.pretrained=false"]


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[] if n == "elic" else pytest.mark.slow) for n in NEW_CODEC_CONFIGS]
)
def test_new_codec_trains_is_attacked_finetuned_studied_and_defended(name, tmp_path, photo_dir):
    """Train 2 batches, evaluate under pgd and worst_case, finetune 2 batches, study=latents, defense=latent_range."""
    import json
    import math

    from conftest import FAST

    from robust_nic.cli import main
    from robust_nic.evaluation.runner import evaluate
    from robust_nic.studies import run_study
    from robust_nic.training import train

    codec_args = new_codec_args(name)
    data = ["data=folder", f"data.root={photo_dir}"]
    steps = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1"]
    train(compose_config("train", [*FAST, *data, *codec_args, *steps]), tmp_path / "train")
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    evaluation = [*codec_args, f"model.checkpoint={checkpoint}", *data, "device=cpu", "max_images=1",
                  "save_images=false", "attack.steps=2", "attack.eps=0.01",
                  "eval.allow_training_images=true"]  # fmt: skip  (one small folder trains and tests here)
    for attack in ("pgd", "worst_case"):
        metrics = evaluate(compose_config("evaluate", [*evaluation, f"attack={attack}"]), tmp_path / attack)
        assert 0 < metrics["test/clean/bpp"] < 24 and math.isfinite(metrics["test/clean/psnr"]), attack
        # within the budget (an untrained variable-rate codec rounds every latent to 0 at low rates: nothing to
        # attack, the attack keeps the clean image)
        assert metrics["test/adv/psnr_in"] >= 40 - 1e-6 and math.isfinite(metrics["test/adv/delta_psnr"])

    finetune = [*FAST, *data, *codec_args, *steps, f"model.checkpoint={checkpoint}", "attack=pgd", "attack.steps=2",
                "attack.eps=0.01"]  # fmt: skip
    results = train(compose_config("train", finetune), tmp_path / "finetune")
    assert results["steps"] == 2 and math.isfinite(results["val/adv/delta_psnr"])

    run_study(compose_config("evaluate", [*evaluation, "attack=pgd", "study=latents"]), tmp_path / "latents")
    study = json.loads((tmp_path / "latents" / "metrics.json").read_text())
    assert study["study/latents/train/last/adv/bpp"] > 0
    assert 0 <= study["study/latents/train/last/outside"] <= 1

    main(["fit-latent-range", "--checkpoint", str(checkpoint), *codec_args, *data])
    ranges = f"{checkpoint}.latent_range.pt"
    defended = [*evaluation, "attack=pgd", "defense=latent_range", f"defense.ranges={ranges}"]
    metrics = evaluate(compose_config("evaluate", defended), tmp_path / "defended")
    assert 0 < metrics["test/clean/bpp"] < 24 and math.isfinite(metrics["test/adaptive/delta_psnr"])


def test_architectures_study_trains_and_attacks_each_codec_alike(tmp_path, photo_dir):
    """`python evaluate.py experiment=architectures`, scaled down: one table row per codec with the numbers its
    own evaluation wrote; a re-run in the same directory reuses the finished work."""
    import csv
    import json


    shared = ["data=folder", f"data.root={photo_dir}", "data.patch_size=64", "data.batch_size=2",
              "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1"]  # fmt: skip
    argv = ["evaluate.py", "experiment=architectures", "data=folder", f"data.root={photo_dir}", "max_images=1",
            "eval.allow_training_images=true",  # one small folder trains and tests here
            "attack=pgd", "attack.steps=2", "study.train=[" + ",".join(f"'{o}'" for o in shared) + "]",
            "~study.variants", "+study.variants={hyperprior: ['model=bmshj2018_hyperprior', 'model.channels=[16,24]'],"
            "elic: ['model=elic', 'model.channels=[16,40]']}", f"hydra.run.dir={tmp_path}",
            "hydra/job_logging=disabled"]  # fmt: skip

    def run() -> dict:
        run_script("evaluate.py", argv[1:])
        return json.loads((tmp_path / "metrics.json").read_text())

    metrics = run()
    rows = list(csv.DictReader(open(tmp_path / "architectures.csv")))
    assert [r["variant"] for r in rows] == ["hyperprior", "elic"]
    assert [r["arch"] for r in rows] == ["bmshj2018-hyperprior", "elic2022-official"]
    for row in rows:
        evaluation = json.loads((tmp_path / row["variant"] / "eval" / "metrics.json").read_text())
        assert float(row["adv/delta_psnr"]) == pytest.approx(evaluation["test/adv/delta_psnr"])
        assert float(row["adv/psnr"]) == pytest.approx(evaluation["test/adv/psnr"])
        assert float(row["source_damage_db"]) == pytest.approx(evaluation["test/clean/psnr"] - evaluation["test/adv/psnr"])
        clean_bpp = metrics[f"study/architectures/{row['variant']}/clean/bpp"]
        assert clean_bpp == pytest.approx(evaluation["test/clean/bpp"])
        assert int(row["train_steps"]) == 2
    assert (tmp_path / "architectures.png").read_bytes()[:4] == b"\x89PNG"
    assert "| elic |" in (tmp_path / "architectures.md").read_text()
    (tmp_path / "run.lock").unlink(missing_ok=True)
    assert run() == metrics  # finished training and evaluations are reused
    stamp = (tmp_path / "elic" / "eval" / "metrics.json").stat().st_mtime_ns
    (tmp_path / "run.lock").unlink(missing_ok=True)
    argv[argv.index("attack.steps=2")] = "attack.steps=3"
    with pytest.raises(SystemExit) as refused:
        run()  # other attack settings in the same run directory: refused, the finished results kept
    assert refused.value.code == 2
    assert (tmp_path / "elic" / "eval" / "metrics.json").stat().st_mtime_ns == stamp
