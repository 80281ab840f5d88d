"""An evaluation killed at any moment and re-run into the same run directory continues after its last
finished image and ends with the per-image rows and metrics of an uninterrupted run; other settings there
are refused, naming the keys that differ."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT, compose_config

from robust_nic.codecs import export_codec
from robust_nic.evaluation.resume import EvaluationSettingsError, image_seed
from robust_nic.evaluation.runner import evaluate

ARGS = ["data=folder", "device=cpu", "attack=pgd", "attack.steps=40", "attack.eps=[0.01,0.02]",
        "attack.random_start=true", "save_images=false", "progress=false"]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(small_codec, tmp_path_factory):
    return export_codec(small_codec, tmp_path_factory.mktemp("ckpt") / "codec.pth.tar")


def measured(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock times (they differ between any two runs)."""
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in rows]


def read_rows(run_dir) -> list[dict]:
    with open(run_dir / "per_image.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def read_metrics(run_dir) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not k.endswith("_s")}


def start(run_dir, checkpoint, photo_dir, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "evaluate.py", f"model.checkpoint={checkpoint}", f"data.root={photo_dir}", *ARGS, *extra,
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def kill_after_rows(process, run_dir, rows: int, sig) -> int:
    """Send `sig` once per_image.csv holds at least `rows` rows; the rows it held then."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / "per_image.csv").is_file() and len(read_rows(run_dir)) >= rows:
            process.send_signal(sig)
            process.wait(timeout=120)
            return len(read_rows(run_dir))
        time.sleep(0.05)
    pytest.fail(f"the evaluation ended before {rows} rows: {process.stdout.read()[-2000:]}")


def test_seeds_depend_on_the_image_alone():
    assert image_seed(0, "a.png") == image_seed(0, "a.png") != image_seed(0, "b.png") != image_seed(1, "b.png")


@pytest.mark.slow
def test_an_evaluation_killed_twice_and_rerun_equals_an_uninterrupted_one(tmp_path, photo_dir, checkpoint):
    whole = tmp_path / "whole"
    assert start(whole, checkpoint, photo_dir).wait(timeout=600) == 0
    resumed = tmp_path / "resumed"
    first = kill_after_rows(start(resumed, checkpoint, photo_dir), resumed, 2, signal.SIGKILL)
    second = kill_after_rows(start(resumed, checkpoint, photo_dir), resumed, first + 2, signal.SIGTERM)
    assert 2 <= first < second < 8  # 4 images x 2 budgets: each kill landed mid-way
    last = start(resumed, checkpoint, photo_dir)
    output = last.communicate(timeout=600)[0]
    assert last.returncode == 0, output[-2000:]
    assert f"{second // 2} of 4 test images are finished" in output
    assert measured(read_rows(resumed)) == measured(read_rows(whole))
    assert read_metrics(resumed) == read_metrics(whole)


def test_a_rerun_continues_after_the_finished_images_and_refuses_other_settings(tmp_path, photo_dir, checkpoint,
                                                                                 capsys):  # fmt: skip
    args = [f"model.checkpoint={checkpoint}", f"data.root={photo_dir}", *ARGS, "attack.steps=3"]
    whole = evaluate(compose_config("evaluate", args), tmp_path / "whole")
    # A run that finished two images: the rows of an uninterrupted run's first two images on disk.
    evaluate(compose_config("evaluate", [*args, "max_images=2"]), tmp_path / "run")
    # ... written by an earlier version, under its names of the same quantities (metric_keys.RENAMED).
    old_csv = (tmp_path / "run" / "per_image.csv").read_text()
    assert "adv/delta_ms_ssim_db" in old_csv
    (tmp_path / "run" / "per_image.csv").write_text(old_csv.replace("adv/delta_ms_ssim_db", "adv/ms_ssim_db_delta"))
    # ... whose config.yaml lacks the keys added since, at their defaults (the behaviour it had).
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    for key in ("train_photos", "val_photos", "heldout_photos"):
        del saved["data"][key]
    del saved["eval"], saved["coding"]
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    capsys.readouterr()
    resumed = evaluate(compose_config("evaluate", args), tmp_path / "run")
    assert "2 of 4 test images are finished (per_image.csv); next " in capsys.readouterr().out
    assert measured(read_rows(tmp_path / "run")) == measured(read_rows(tmp_path / "whole"))
    assert {k: v for k, v in resumed.items() if not k.endswith("_s")} == {
        k: v for k, v in whole.items() if not k.endswith("_s")}  # fmt: skip

    with pytest.raises(EvaluationSettingsError, match=r"attack.steps \(3 -> 4\), seed \(0 -> 1\)"):
        evaluate(compose_config("evaluate", [*args, "attack.steps=4", "seed=1"]), tmp_path / "run")
