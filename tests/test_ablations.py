"""Attack ablations (`evaluate.py -m experiment=ablation_*`): one table and figure per sweep, from the jobs' metrics."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT, compose_config
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from robust_nic.codecs import export_codec
from robust_nic.config import CONF_DIR, resolve

SWEEPS = {
    # experiment: (swept override, the config value it sets, variants)
    "ablation_optimizer": ("attack", "attack.name", ["chen2023", "ifgsm", "mifgsm", "pgd", "noise"]),
    "ablation_distance": ("attack.distance", "attack.distance", ["mse", "ms_ssim"]),
}
COLUMNS = {
    "delta_psnr": "test/adv/delta_psnr",
    "psnr": "test/adv/psnr",
    "psnr_in": "test/adv/psnr_in",
    "ms_ssim": "test/adv/ms_ssim",
    "bpp": "test/adv/bpp",
    "clean/psnr": "test/clean/psnr",
    "clean/ms_ssim": "test/clean/ms_ssim",
    "clean/bpp": "test/clean/bpp",
}


@pytest.fixture(scope="module")
def checkpoint(small_codec, tmp_path_factory):
    return export_codec(small_codec, tmp_path_factory.mktemp("ckpt") / "codec.pth.tar")


def hydra_config(experiment: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", [f"experiment={experiment}"], return_hydra_config=True).hydra


@pytest.mark.parametrize("experiment", sorted(SWEEPS))
def test_each_variant_of_a_sweep_composes_with_equal_steps_and_budget(experiment):
    key, value_key, variants = SWEEPS[experiment]
    assert hydra_config(experiment).sweeper.params[key].split(",") == variants
    for variant in variants:
        cfg = compose_config("evaluate", [f"experiment={experiment}", f"{key}={variant}"])
        settings = resolve(cfg)
        assert OmegaConf.select(cfg, value_key) == variant
        assert settings["attack"]["steps"] == 100 and settings["attack"]["eps"] == 0.01
        assert settings["attack"]["proxy"] == "skip" and settings["seed"] == 0


def test_budget_ablation_is_the_noise_study_with_the_papers_attack():
    cfg = compose_config("evaluate", ["experiment=ablation_budget"])
    assert cfg.study.name == "noise" and cfg.attack.name == "chen2023" and cfg.attack.norm == "rms"
    assert list(cfg.study.mse) == [1e-5, 1e-4, 1e-3, 1e-2]
    assert hydra_config("ablation_budget").callbacks.ablation_summary.name == "budget"


def run_sweep(tmp_path, photo_dir, checkpoint, experiment, *overrides):
    out = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "-m",
            f"experiment={experiment}",
            f"model.checkpoint={checkpoint}",
            "data=folder",
            f"data.root={photo_dir}",
            "max_images=1",
            "device=cpu",
            "progress=false",
            "threads=1",
            f"hydra.sweep.dir={tmp_path}",
            *overrides,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "ablation.png").stat().st_size > 1000
    assert (tmp_path / "ablation.md").read_text().count("\n|") >= 2
    return list(csv.DictReader(open(tmp_path / "ablation.csv")))


def test_optimizer_ablation_runs_every_attack_and_tabulates_each_jobs_metrics(
    tmp_path, photo_dir, checkpoint
):
    rows = run_sweep(tmp_path, photo_dir, checkpoint, "ablation_optimizer", "attack.steps=2")
    assert [r["variant"] for r in rows] == SWEEPS["ablation_optimizer"][2]
    assert [r["steps"] for r in rows] == ["2", "2", "2", "2", "0"]  # noise takes no steps
    for row in rows:
        metrics = json.loads((tmp_path / row["job"] / "metrics.json").read_text())
        for column, key in COLUMNS.items():
            assert math.isfinite(float(row[column])) and float(row[column]) == pytest.approx(metrics[key]), (
                column
            )
    by_variant = {r["variant"]: float(r["delta_psnr"]) for r in rows}
    # The optimised attack beats random noise of the same energy.
    assert by_variant["chen2023"] > by_variant["noise"]


def test_budget_ablation_has_attack_and_noise_at_each_mse(tmp_path, photo_dir, checkpoint):
    rows = run_sweep(
        tmp_path, photo_dir, checkpoint, "ablation_budget", "attack.steps=2", "study.mse=[1e-4,1e-2]"
    )
    assert [(r["variant"], float(r["mse"])) for r in rows] == [
        ("noise", 1e-4),
        ("noise", 1e-2),
        ("chen2023", 1e-4),
        ("chen2023", 1e-2),
    ]
    metrics = json.loads((tmp_path / "0" / "metrics.json").read_text())
    for row in rows:
        kind = "noise" if row["variant"] == "noise" else "adv"
        eps = math.sqrt(float(row["mse"]))
        assert float(row["delta_psnr"]) == pytest.approx(metrics[f"test/{kind}/eps_{eps:g}/delta_psnr"])
        assert float(row["eps"]) == pytest.approx(eps) and math.isfinite(float(row["bpp"]))


def test_a_stopped_jobs_partial_numbers_stay_out_of_the_sweep_tables(tmp_path, caplog):
    """A job that stopped leaves a metrics.json marked partial (the images it finished): the sweep summary
    and the budget ablation leave it out, saying so, instead of tabulating a mean over fewer images."""
    import yaml

    from robust_nic.ablation import budget_rows
    from robust_nic.sweep import summarize_sweep

    for job, partial in (("0", False), ("1", True)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"attack.eps={0.01 * (1 + int(job))}"])
        )
        config = {
            "attack": {"name": "chen2023", "distance": "mse", "steps": 2, "eps": 0.01},
            "study": {"mse": [1e-4]},
        }
        (tmp_path / job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        metrics = {
            "test/adv/delta_psnr": 3.0 + int(job),
            "test/noise/delta_psnr": 0.1,
            "test/clean/psnr": 30.0,
        }
        (tmp_path / job / "metrics.json").write_text(
            json.dumps(
                metrics
                | ({"partial": True, "partial_reason": "stopped by KeyboardInterrupt"} if partial else {})
            )
        )
    with caplog.at_level("WARNING"):
        rows = summarize_sweep(tmp_path)
        budget = budget_rows(tmp_path)
    assert [r["job"] for r in rows] == ["0"] and {r["job"] for r in budget} == {"0"}
    assert "1/metrics.json is partial (stopped by KeyboardInterrupt)" in caplog.text
    assert "| 1 |" not in (tmp_path / "summary.md").read_text()
