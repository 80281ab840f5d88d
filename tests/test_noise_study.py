"""The noise study measures its images with the evaluation runner's loop: a stopped study re-run into its
directory continues with the unfinished images and ends with an uninterrupted study's rows, eval.batch_size
changes no row, and a non-finite measurement fails the study naming the image."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from conftest import assert_names_declared, compose_config
from test_batched_evaluation import assert_same_rows

from robust_nic.codecs import export_codec
from robust_nic.evaluation.measure import NonFiniteError
from robust_nic.evaluation.resume import EvaluationSettingsError
from robust_nic.evaluation.runner import Evaluation
from robust_nic.studies import run_study

# Test images in order: astronaut.png, chelsea_70x90.png, rocket.jpg (96x96 but chelsea).
ARGS = ["study=noise", "study.mse=[1e-4,1e-3]", "attack=pgd", "attack.steps=2", "attack.random_start=true",
        "max_images=3", "progress=false"]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(small_codec, tmp_path_factory):
    return export_codec(small_codec, tmp_path_factory.mktemp("ckpt") / "codec.pth.tar")


def study(run_dir, photo_dir, checkpoint, *overrides) -> list[dict]:
    cfg = compose_config("evaluate", [f"model.checkpoint={checkpoint}", "data=folder", f"data.root={photo_dir}",
                                      "device=cpu", *ARGS, *overrides])  # fmt: skip
    run_study(cfg, run_dir)
    return read_csv(run_dir / "noise_per_image.csv")


def read_csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def measured(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock times (they differ between any two runs)."""
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in rows]


def metrics(run_dir) -> dict:
    return {
        k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if not k.endswith("_s")
    }


@pytest.fixture(scope="module")
def uninterrupted(photo_dir, checkpoint, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole")
    return run_dir, study(run_dir, photo_dir, checkpoint)


def test_the_rows_are_the_runners_with_the_budget_as_mse(uninterrupted):
    run_dir, rows = uninterrupted
    assert [(r["image"], float(r["mse"])) for r in rows] == [
        (image, mse) for image in ("astronaut.png", "chelsea_70x90.png", "rocket.jpg") for mse in (1e-4, 1e-3)
    ]
    for row in rows:
        assert float(row["eps"]) == pytest.approx(math.sqrt(float(row["mse"])), rel=1e-12)
        # Noise spends the whole budget: its input PSNR is the bound, up to 8-bit rounding.
        assert float(row["noise/psnr_in"]) == pytest.approx(-10 * math.log10(float(row["mse"])), abs=0.5)
    # Each image draws its own noise (seeded by its name): no two images share a perturbation's PSNR.
    assert len({r["noise/psnr_in"] for r in rows if r["mse"] == rows[0]["mse"]}) == 3
    table = read_csv(run_dir / "noise.csv")
    assert [float(r["mse"]) for r in table] == [1e-4, 1e-3]
    mean = sum(float(r["adv/delta_psnr"]) for r in rows if float(r["mse"]) == 1e-4) / 3
    assert float(table[0]["adv/delta_psnr"]) == pytest.approx(mean)
    saved = metrics(run_dir)
    assert saved["test/images"] == 3 and saved["skipped"] == [] and "partial" not in saved
    assert saved["test/noise/eps_0.01/delta_psnr"] == pytest.approx(float(table[0]["noise/delta_psnr"]))
    assert_names_declared(run_dir, rows="noise_per_image.csv")


def test_a_stopped_study_continues_to_the_rows_of_an_uninterrupted_one(
    uninterrupted, photo_dir, checkpoint, tmp_path, monkeypatch, capsys
):
    real = Evaluation.batch_rows

    def stopped_at_rocket(self, indices, paths, x):
        if paths[0].name == "rocket.jpg":
            raise KeyboardInterrupt  # Ctrl-C in the third image
        return real(self, indices, paths, x)

    monkeypatch.setattr(Evaluation, "batch_rows", stopped_at_rocket)
    with pytest.raises(KeyboardInterrupt):
        study(tmp_path, photo_dir, checkpoint)
    assert [r["image"] for r in read_csv(tmp_path / "noise_per_image.csv")] == [
        "astronaut.png", "astronaut.png", "chelsea_70x90.png", "chelsea_70x90.png"
    ]  # fmt: skip
    partial = metrics(tmp_path)
    assert partial["partial"] is True and "KeyboardInterrupt" in partial["partial_reason"]
    assert partial["test/images"] == 2 and not (tmp_path / "noise.csv").exists()

    monkeypatch.setattr(Evaluation, "batch_rows", real)
    with pytest.raises(EvaluationSettingsError, match=r"study.mse"):
        study(tmp_path, photo_dir, checkpoint, "study.mse=[1e-4]")
    capsys.readouterr()
    rows = study(tmp_path, photo_dir, checkpoint)
    assert "2 of 3 test images are finished (noise_per_image.csv); next rocket.jpg" in capsys.readouterr().out
    whole_dir, whole = uninterrupted
    assert measured(rows) == measured(whole)
    assert metrics(tmp_path) == metrics(whole_dir)
    assert read_csv(tmp_path / "noise.csv") == read_csv(whole_dir / "noise.csv")


def test_batched_rows_equal_one_image_at_a_time(uninterrupted, photo_dir, checkpoint, tmp_path):
    batched = study(tmp_path, photo_dir, checkpoint, "eval.batch_size=2")  # astronaut and rocket together
    assert_same_rows(uninterrupted[1], batched)


def test_a_non_finite_noise_decode_fails_the_study_naming_the_image(
    photo_dir, checkpoint, small_codec, tmp_path, monkeypatch
):
    """Per image: the clean decode, then per budget the noise's and the attack's decodes (5 in all);
    the 7th is the noise's at the first budget on the second image."""
    real, calls = type(small_codec).decompress, []

    def decompress(self, strings, shape):
        out = real(self, strings, shape)
        calls.append(1)
        if len(calls) == 7:
            out["x_hat"] = torch.full_like(out["x_hat"], float("nan"))
        return out

    monkeypatch.setattr(type(small_codec), "decompress", decompress)
    with pytest.raises(
        NonFiniteError, match=r"chelsea_70x90.png: noise attacked decode at eps 0.01"
    ) as error:
        study(tmp_path, photo_dir, checkpoint)
    assert "astronaut" not in str(error.value) and "noise_per_image.csv" in str(error.value)
    rows = read_csv(tmp_path / "noise_per_image.csv")
    assert len(rows) == 6 and math.isnan(float(rows[2]["noise/psnr_out"]))  # NaN, not a capped 100 dB
    assert all(math.isfinite(float(v)) for r in rows if r["image"] != "chelsea_70x90.png" for k, v in r.items()
               if "/" in k)  # fmt: skip
    partial = metrics(tmp_path)
    assert partial["partial"] is True and "chelsea_70x90.png" in partial["partial_reason"]
    assert partial["test/images"] == 2  # the two finite images
