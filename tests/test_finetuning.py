"""Adversarial finetuning: the inner attack loop inside the LightningModule, warm-up, mixing, sweeps."""

from __future__ import annotations

import io
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FAST, ROOT, compose_config

from robust_nic.attacks import build_attack
from robust_nic.config import ConfigError, resolve
from robust_nic.module import CodecModule
from robust_nic.settings import DataSettings
from robust_nic.training import train


def module_for(codec, *overrides):
    settings = resolve(compose_config("train", [*FAST, "data.root=/tmp", "attack=pgd", "attack.steps=2", *overrides]))
    return CodecModule.from_settings(codec, settings, attack=build_attack(settings["attack"])), settings


def test_inner_attack_leaves_no_gradient_or_mode_change(small_codec):
    module, _ = module_for(small_codec)
    small_codec.train()
    before = {n: p.detach().clone() for n, p in small_codec.named_parameters()}
    x = torch.rand(4, 3, 64, 64)
    inputs, targets, count = module.adversarial_batch(x)
    assert count == 4 and not torch.equal(inputs, x) and torch.equal(inputs, targets)
    assert small_codec.training
    assert all(p.grad is None for p in small_codec.parameters())
    assert all(torch.equal(before[n], p) for n, p in small_codec.named_parameters())
    small_codec.eval()


@pytest.mark.parametrize("ratio, expected", [(0.0, 0), (0.1, 1), (0.5, 2), (0.75, 3), (1.0, 4)])  # 0.1: at least one
def test_adv_ratio_mixes_as_configured(small_codec, ratio, expected):
    module, _ = module_for(small_codec, f"train.adv_ratio={ratio}", "train.adv_target=source")
    x = torch.rand(4, 3, 64, 64)
    inputs, targets, count = module.adversarial_batch(x)
    assert count == expected
    assert torch.equal(inputs[expected:], x[expected:])
    assert torch.equal(targets, x)  # adv_target=source: reconstruct the clean image
    if expected:
        assert not torch.equal(inputs[:expected], x[:expected])


def test_eps_warmup_follows_linear_schedule():
    settings = resolve(compose_config("train", ["attack=pgd", "attack.eps=0.02", "attack.warmup_steps=10"]))
    attack = build_attack(settings["attack"])
    assert [round(attack.eps_at(s), 6) for s in (0, 4, 9, 50)] == [0.002, 0.01, 0.02, 0.02]


def test_attack_eps_alone_selects_the_papers_recipe_and_none_with_eps_is_an_error():
    settings = resolve(compose_config("train", ["model=cheng2020", "model.pretrained=false", "attack.eps=0.01"]))
    assert settings["attack"]["name"] == "chen2023" and settings["attack"]["steps"] == 300
    assert resolve(compose_config("train", []))["attack"]["name"] == "none"
    with pytest.raises(ConfigError, match="attack=chen2023"):
        resolve(compose_config("evaluate", ["attack.eps=0.01"]))


def test_design_card_command_runs_a_finetuning_step(tmp_path, photo_dir):
    cfg = compose_config("train", [
        "model=cheng2020", "attack.eps=0.01", "model.pretrained=false", "model.quality=1",
        f"data.root={photo_dir}", "data=folder", "data.patch_size=64", "data.batch_size=2",
        "trainer.max_steps=1", "trainer.val_check_interval=1", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "attack.steps=2", "trainer.accelerator=cpu",
    ])
    results = train(cfg, tmp_path)
    assert results["steps"] == 1
    # The paper's recipe: eps ramps up over 100 batches, so batch 0 attacks at eps / 100.
    assert results["train/eps"] == pytest.approx(0.01 / 100)
    # Validation attacks at the full budget through the real coder: a finite index, an attacked quality
    # that is a plausible PSNR (not a capped 100 dB or a NaN turned into a number).
    assert math.isfinite(results["val/adv/delta_psnr"])
    assert 0 < results["val/adv/psnr"] < 60 and 0 < results["val/psnr"] < 60


def test_finetuning_run_logs_robustness_and_keeps_most_robust_checkpoint(tmp_path, photo_dir):
    cfg = compose_config("train", [*FAST, f"data.root={photo_dir}", "attack=pgd", "attack.steps=2",
                                   "attack.warmup_steps=2", "trainer.max_steps=4", "trainer.val_check_interval=2"])
    results = train(cfg, tmp_path)
    values = {k: results[k] for k in ("val/adv/delta_psnr", "val/adv/psnr", "val/psnr", "val/bpp", "val/robust_objective")}
    assert all(math.isfinite(v) for v in values.values()), values
    assert 0 < values["val/bpp"] < 24 and 0 < values["val/adv/psnr"] < 60
    # The sweep objective is what it says: rd_loss + 0.1 * max(delta_psnr, 0).
    assert values["val/robust_objective"] == pytest.approx(
        results["val/rd_loss"] + 0.1 * max(values["val/adv/delta_psnr"], 0), rel=1e-4
    )
    best = list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert best and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    saved = torch.load(best[0], map_location="cpu", weights_only=True)
    assert any("val/adv/delta_psnr" in str(k) for k in saved["callbacks"])


def test_multirun_over_two_values_makes_two_runs_and_a_summary(tmp_path, photo_dir):
    out = subprocess.run(
        [sys.executable, "train.py", "-m", *FAST, f"data.root={photo_dir}", "trainer.max_steps=2",
         "model.quality=1,2", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "0" / "train_metrics.json").is_file() and (tmp_path / "1" / "train_metrics.json").is_file()
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and "model.quality" in summary[0]
    assert not list(tmp_path.rglob("run.lock"))  # the sweep's and each job's locks are released


def test_optuna_search_runs_trials_and_reports_the_objective(tmp_path, photo_dir):
    out = subprocess.run(
        [sys.executable, "train.py", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=1",
         *FAST, f"data.root={photo_dir}", "trainer.max_steps=2", "attack=pgd", "attack.steps=1",
         f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert "best_value" in best and "best_params" in best


def test_consistency_term_compares_real_reconstructions(small_codec):
    module, _ = module_for(small_codec, "train.consistency_weight=1.0", "train.adv_ratio=0.5", "attack.eps=0.05")
    x = torch.rand(4, 3, 64, 64)
    inputs, targets, count = module.adversarial_batch(x)
    small_codec.train()  # as in training: the RD term uses noise quantization
    # Straight-through rounding is deterministic: an unattacked image costs exactly nothing (noise
    # quantization would charge its own random draws here).
    real, clean = module.real_reconstructions(x[:count], x[:count])
    assert torch.equal(real, clean)
    losses = module.rd_and_consistency(x, inputs, targets, count)
    assert losses["consistency_loss"] > 0
    assert small_codec.training  # the surrogate's eval mode does not leak out
    plain, _ = module_for(small_codec, "train.adv_ratio=0.5")
    without = plain.rd_and_consistency(x, inputs, targets, count)
    assert "consistency_loss" not in without
    assert losses["mse_loss"] == ((module.real_reconstructions(inputs, x[:0])[0] - targets) ** 2).mean()
    losses["consistency_loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in small_codec.g_a.parameters())
    small_codec.zero_grad(set_to_none=True)
    small_codec.eval()


@pytest.mark.parametrize("experiment, name, proxy, steps, consistency, select, adv_ratio", [
    ("finetune_tiny", "chen2023", "skip", 10, 0.0, "best", 1.0),  # the paper's recipe, scaled down
    ("finetune_cheap", "pgd", "skip", 2, 3.0, "best", 1.0),  # few budget-sized PGD steps + consistency
    ("finetune_fast", "pgd", "skip", 1, 0.0, "last", 0.4),  # one step on 40 % of each batch (FGSM-RS)
])
def test_finetuning_recipes_compose_to_their_attacks(experiment, name, proxy, steps, consistency, select, adv_ratio):
    settings = resolve(compose_config("train", [f"experiment={experiment}", "model.checkpoint=x.ckpt"]))
    attack = build_attack(settings["attack"])
    assert (attack.name, attack.proxy, attack.options.steps, attack.eps) == (name, proxy, steps, 0.01)
    assert (attack.select, settings["train"]["adv_ratio"]) == (select, adv_ratio)
    assert settings["train"]["consistency_weight"] == consistency


def test_few_step_pgd_takes_budget_sized_steps():
    from robust_nic.attacks.iterative import default_alpha

    assert default_alpha("rms", 0.01, 2) == pytest.approx(0.0125)  # FGSM-with-random-start sized
    assert default_alpha("rms", 0.01, 100) == pytest.approx(0.0025)  # long runs: a quarter radius
    assert default_alpha("linf", 0.01, 10) == pytest.approx(0.0025)


def panel_overrides(photo_dir, logger):
    return [*FAST, f"data.root={photo_dir}", f"logger={logger}", "trainer.max_steps=1", "trainer.val_check_interval=1",
            "attack=pgd", "attack.eps=0.01", "attack.steps=1"]


def first_val_image_8bit(photo_dir):
    from PIL import Image

    from robust_nic.data import split_files

    path = split_files(DataSettings(name="folder", root=str(photo_dir)))["val"][0]
    return np.asarray(Image.open(path).convert("RGB"))


def test_wandb_image_panel_shows_the_8bit_images(tmp_path, photo_dir, monkeypatch):
    """The offline run's PNGs hold the validation image's own 8-bit values (wandb 0.31 logged float images all 0)."""
    import wandb
    from PIL import Image

    monkeypatch.setenv("WANDB_MODE", "offline")
    train(compose_config("train", panel_overrides(photo_dir, "wandb")), tmp_path)
    wandb.finish()
    pngs = sorted((tmp_path / "wandb").glob("offline-run-*/files/media/images/val/images_*.png"))
    # source, adversarial, clean and attacked reconstructions (wandb stores identical images once: the
    # reconstructions of this barely trained codec may coincide)
    assert len(pngs) >= 3, pngs
    panels = [np.asarray(Image.open(p).convert("RGB")).astype(float) for p in pngs]
    source = first_val_image_8bit(photo_dir)
    assert sum(np.array_equal(p, source) for p in panels) == 1  # the source panel, pixel for pixel
    rms = [np.sqrt(((p - source) ** 2).mean()) / 255 for p in panels]
    assert sum(0 < r <= 0.01 + 1 / 255 for r in rms) == 1  # the adversarial panel: within the budget


def test_tensorboard_image_panel_shows_the_8bit_images(tmp_path, photo_dir):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(compose_config("train", panel_overrides(photo_dir, "tensorboard")), tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert len(events.Tags()["images"]) == 4

    def panel(tag):
        (image,) = events.Images(tag)
        return np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))

    source = first_val_image_8bit(photo_dir)
    assert np.array_equal(panel("val/images/source"), source)
    adversarial = panel("val/images/adversarial").astype(float)
    assert 0 < np.sqrt(((adversarial - source) ** 2).mean()) / 255 <= 0.01 + 1 / 255  # the budget, after rounding
