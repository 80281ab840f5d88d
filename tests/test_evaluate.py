"""evaluate.py: clean and attacked coding of every image, result files a person can use."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from conftest import ROOT, compose_config

from robust_nic.codecs import CodecError, export_codec
from robust_nic.evaluation.runner import evaluate


@pytest.fixture(scope="module")
def checkpoint(small_codec, tmp_path_factory):
    return export_codec(small_codec, tmp_path_factory.mktemp("ckpt") / "codec.pth.tar")


def run_eval(tmp_path, photo_dir, checkpoint, *overrides):
    cfg = compose_config("evaluate", [f"model.checkpoint={checkpoint}", "data=folder", f"data.root={photo_dir}",
                                      "device=cpu", *overrides])
    return evaluate(cfg, tmp_path)


def test_attack_evaluation_writes_metrics_images_and_figures(tmp_path, photo_dir, checkpoint):
    metrics = run_eval(tmp_path, photo_dir, checkpoint, "attack=pgd", "attack.steps=5", "attack.eps=0.01", "max_images=2")
    for key in ("test/clean/bpp", "test/clean/psnr", "test/adv/psnr_in", "test/adv/psnr_out", "test/adv/delta_psnr",
                "test/adv/psnr", "test/adv/ms_ssim_db_delta", "test/adv/bpp", "test/adv/delta_bpp_pct", "test/adv/attack_s"):
        assert key in metrics, key
    # eps=0.01 RMS is 40 dB, after 8-bit rounding; an attack that did nothing (capped 100 dB) or NaN fails
    assert 40 - 1e-6 <= metrics["test/adv/psnr_in"] < 50
    assert metrics["test/adv/delta_psnr"] > 0  # the attack is amplified by the codec
    rows = list(csv.DictReader(open(tmp_path / "per_image.csv")))
    assert len(rows) == 2 and all(40 - 1e-6 <= float(r["adv/psnr_in"]) < 50 for r in rows)
    assert len(list((tmp_path / "figures").glob("*.png"))) == 2
    assert len(list((tmp_path / "images").glob("*_adv.png"))) == 2  # <image>_eps<eps>_adv.png
    results = json.loads((tmp_path / "results_compressai.json").read_text())
    assert set(results["results"]) >= {"psnr-rgb", "ms-ssim-rgb", "bpp"}
    assert (tmp_path / "codec.pth.tar").is_file() and (tmp_path / "config.yaml").is_file()


def test_attack_beats_noise_baseline(tmp_path, photo_dir, checkpoint):
    attacked = run_eval(tmp_path / "a", photo_dir, checkpoint, "attack=pgd", "attack.steps=10", "attack.eps=0.01",
                        "max_images=1", "save_images=false")
    noise = run_eval(tmp_path / "n", photo_dir, checkpoint, "attack=noise", "attack.eps=0.01", "max_images=1",
                     "save_images=false")
    assert attacked["test/adv/delta_psnr"] > noise["test/adv/delta_psnr"] + 3
    # The transforms alone (no rounding) amplify far less: latent rounding flips add several dB (measured
    # on this test codec: attack 9.3 vs 3.3 dB, noise -8.8 vs -17.5 dB).
    for run in (attacked, noise):
        assert run["test/adv/delta_psnr_smooth"] < run["test/adv/delta_psnr"] - 3


def test_several_budgets_in_one_run_make_a_curve(tmp_path, photo_dir, checkpoint):
    metrics = run_eval(tmp_path, photo_dir, checkpoint, "attack=pgd", "attack.steps=3", "attack.eps=[0.005,0.02]",
                       "max_images=1", "save_images=false")
    assert "test/adv/eps_0.005/delta_psnr" in metrics and "test/adv/eps_0.02/delta_psnr" in metrics
    assert metrics["test/adv/eps_0.02/psnr_in"] < metrics["test/adv/eps_0.005/psnr_in"]
    assert (tmp_path / "delta_psnr_vs_eps.png").is_file()


def test_defense_reports_transferred_and_adaptive_attacks(tmp_path, photo_dir, checkpoint):
    metrics = run_eval(tmp_path, photo_dir, checkpoint, "defense=self_ensemble", "defense.transforms=[0,2]",
                       "attack=pgd", "attack.steps=3", "max_images=1", "save_images=false")
    assert "test/adv/delta_psnr" in metrics and "test/adaptive/delta_psnr" in metrics
    assert "test/adv/delta_psnr_smooth" not in metrics  # the split is for the bare codec only


def test_seed_makes_results_repeatable(tmp_path, photo_dir, checkpoint):
    args = ("attack=pgd", "attack.steps=3", "max_images=1", "save_images=false")
    first = run_eval(tmp_path / "1", photo_dir, checkpoint, *args)
    second = run_eval(tmp_path / "2", photo_dir, checkpoint, *args)
    assert first["test/adv/delta_psnr"] == second["test/adv/delta_psnr"]


def test_untrained_tiny_codec_is_refused(tmp_path):
    with pytest.raises(CodecError, match="model.checkpoint=PATH"):
        evaluate(compose_config("evaluate", []), tmp_path)


def test_evaluate_cli_clean_run(tmp_path, photo_dir, checkpoint):
    out = subprocess.run(
        [sys.executable, "evaluate.py", f"model.checkpoint={checkpoint}", "data=folder", f"data.root={photo_dir}",
         f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["test/images"] == 4


def test_targeted_evaluation_aims_at_the_next_image(tmp_path, photo_dir, checkpoint):
    metrics = run_eval(tmp_path, photo_dir, checkpoint, "attack=pgd", "attack.steps=3", "attack.objective=targeted",
                       "max_images=1", "save_images=false")
    assert 40 - 1e-6 <= metrics["test/adv/psnr_in"] < 50 and metrics["test/adv/delta_psnr"] > 0
