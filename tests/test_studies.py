"""Studies behind `evaluate.py study=...`: recompression, transfer (cross-image, cross-codec), noise."""

from __future__ import annotations

import csv
import json
import runpy
import sys

import pytest
import torch
from conftest import ROOT, compose_config, logging_restored, photo, train_small_codec
from omegaconf import OmegaConf

from robust_nic.attacks.budget import Budget
from robust_nic.codecs import export_codec, load_codec_checkpoint
from robust_nic.coding import code
from robust_nic.config import ConfigError
from robust_nic.defenses import build_defense
from robust_nic.evaluation.measure import clean_metrics
from robust_nic.evaluation.runner import evaluate
from robust_nic.images import read_image
from robust_nic.metrics import psnr
from robust_nic.studies import run_study
from robust_nic.studies.recompression import recompress
from robust_nic.studies.transfer import apply_perturbation, fit_perturbation


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two different tiny trained codecs, exported as plain CompressAI state dicts (for study.codecs)."""
    root = tmp_path_factory.mktemp("codecs")
    a = train_small_codec(steps=40, channels=(16, 24))
    b = train_small_codec(steps=20, channels=(16, 24), seed=1)
    return export_codec(a, root / "a.pth.tar"), export_codec(b, root / "b.pth.tar")


def study_config(photo_dir, checkpoint, *overrides):
    return compose_config("evaluate", [f"model.checkpoint={checkpoint}", "data=folder", f"data.root={photo_dir}",
                                       "device=cpu", *overrides])  # fmt: skip


def read_csv(path):
    return list(csv.DictReader(open(path)))


def timeless(rows):
    """Rows without timings, NaN (MS-SSIM of small images) as None so that rows compare equal."""
    return [{k: None if v != v else v for k, v in row.items() if not k.endswith("_s")} for row in rows]


def test_recompression_of_a_fixed_image_is_deterministic(checkpoints, photo_dir, tmp_path):
    codec = load_codec_checkpoint("bmshj2018-hyperprior", checkpoints[0]).eval()
    coder = build_defense(None, codec)
    x = read_image(photo_dir / "astronaut.png")[None]
    first = recompress(coder, x, 3, keep_dir=tmp_path, keep=(1, 3))
    second = recompress(codec, x, 3)  # a bare codec works too
    assert [r["generation"] for r in first] == [1, 2, 3]
    assert timeless(first) == timeless(second)
    assert first[0]["psnr"] == pytest.approx(float(clean_metrics(x, code(codec, x))["psnr"][0]))
    # generation 2 codes exactly the PNG that generation 1 decoded
    again = code(codec, read_image(tmp_path / "gen001.png")[None])
    assert first[1]["bpp"] == float(again.bpp[0])
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["gen001.png", "gen003.png"]


def test_recompression_study_writes_curves_per_codec(checkpoints, photo_dir, tmp_path):
    cfg = study_config(photo_dir, checkpoints[0], "study=recompression", "study.generations=2", "max_images=2",
                       f"study.codecs=[{checkpoints[1]}]", "study.with_self_ensemble=true",
                       "study.keep_generations=[2]")  # fmt: skip
    metrics = run_study(cfg, tmp_path)
    means = read_csv(tmp_path / "recompression.csv")
    assert [(r["codec"], r["generation"]) for r in means] == [
        ("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("a+self_ensemble", "1"), ("a+self_ensemble", "2")
    ]  # fmt: skip
    assert len(read_csv(tmp_path / "recompression_per_image.csv")) == 3 * 2 * 2
    assert "study/recompression/a/psnr_gen2" in metrics
    assert (tmp_path / "recompression.png").is_file() and (tmp_path / "config.yaml").is_file()
    assert len(list((tmp_path / "images").rglob("gen002.png"))) == 3 * 2
    manifest = json.loads((tmp_path / "study.json").read_text())
    assert manifest["study"] == "recompression" and len(manifest["summary"]) == 3


def test_fit_perturbation_crops_tiles_and_resizes():
    delta = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    assert torch.equal(fit_perturbation(delta, (2, 2)), delta[..., 1:3, 2:4])  # centre crop
    assert fit_perturbation(delta, (9, 7)).shape == (2, 3, 9, 7)  # tiled, then cropped
    assert fit_perturbation(delta, (9, 7), "resize").shape == (2, 3, 9, 7)
    with pytest.raises(ConfigError, match="study.fit"):
        fit_perturbation(delta, (2, 2), "stretch")
    x = torch.rand(1, 3, 5, 5).mul(255).round() / 255
    x_adv = (x + torch.randn_like(x) / 50).clamp(0, 1).mul(255).round() / 255
    budget = Budget("rms", eps=1.0)
    assert torch.equal(apply_perturbation(x, x_adv - x, budget), x_adv)  # same image: the attack itself


@pytest.mark.parametrize("fit", ["crop", "resize"])
def test_transferred_perturbation_keeps_the_budget_on_its_target(fit):
    """A perturbation concentrated in the centre of a large source is 4x stronger on a small target's
    centre crop (28 dB instead of 40 dB unprojected); on the target it must still satisfy the budget."""
    eps = 0.01  # rms, i.e. psnr_in >= 40 dB
    budget = Budget("rms", eps=eps)
    source = torch.from_numpy(photo("coffee.png")[:64, :64].copy()).permute(2, 0, 1)[None].float() / 255
    target = torch.from_numpy(photo("chelsea.png")[100:116, 100:116].copy()).permute(2, 0, 1)[None].float() / 255
    delta = torch.zeros_like(source)
    signs = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5
    delta[..., 24:40, 24:40] = torch.where(signs, 1.0, -1.0)
    source_adv = budget.round(source, source + delta * eps * 4)  # in budget on the source
    assert budget.within(source, source_adv).all()
    target_adv = apply_perturbation(target, source_adv - source, budget, fit)
    moved = target_adv - target
    assert torch.equal(target_adv, (target_adv * 255).round() / 255)  # 8-bit
    assert torch.isfinite(moved).all() and budget.within(target, target_adv).all()
    assert (moved.pow(2).mean().sqrt() <= eps + 1e-6).item() and psnr(target, target_adv).item() >= 40 - 1e-4
    if fit == "crop":  # projected (to whole 8-bit levels), not thrown away
        assert moved.pow(2).mean().sqrt() > 0.5 * eps


def test_transfer_matrices_have_the_right_shape_and_diagonal(checkpoints, photo_dir, tmp_path):
    attack = ("attack=pgd", "attack.steps=2", "max_images=3")
    run_study(study_config(photo_dir, checkpoints[0], "study=transfer", f"study.codecs=[{checkpoints[1]}]",
                           "study.labels=[other]", *attack), tmp_path / "study")  # fmt: skip
    images = read_csv(tmp_path / "study" / "transfer_images_delta_psnr.csv")
    names = [r["source \\ target"] for r in images]
    assert len(images) == 3 and list(images[0]) == ["source \\ target", *names]
    codecs = read_csv(tmp_path / "study" / "transfer_codecs_delta_psnr.csv")
    assert [r["crafted on \\ coded by"] for r in codecs] == ["a", "other"] and list(codecs[0])[1:] == [
        "a",
        "other",
    ]
    assert len(read_csv(tmp_path / "study" / "transfer_images.csv")) == 9
    assert len(read_csv(tmp_path / "study" / "transfer_codecs.csv")) == 3 * 4
    assert (tmp_path / "study" / "transfer_images.png").is_file() and (
        tmp_path / "study" / "transfer_codecs.png"
    ).is_file()

    # The diagonal is the normal attack, exactly as evaluate.py measures it.
    evaluate(study_config(photo_dir, checkpoints[0], *attack, "save_images=false"), tmp_path / "eval")
    direct = {r["image"]: float(r["adv/delta_psnr"]) for r in read_csv(tmp_path / "eval" / "per_image.csv")}
    diagonal = {r["source \\ target"]: float(r[r["source \\ target"]]) for r in images}
    assert diagonal == pytest.approx(direct, abs=1e-9)
    mean = sum(direct.values()) / len(direct)
    assert float(codecs[0]["a"]) == pytest.approx(mean, abs=1e-9)


def test_noise_study_table_has_one_row_per_budget(checkpoints, photo_dir, tmp_path):
    cfg = study_config(photo_dir, checkpoints[0], "study=noise", "study.mse=[1e-4,1e-3]", "attack=pgd",
                       "attack.steps=2", "max_images=2", "defense=bitdepth")  # fmt: skip
    metrics = run_study(cfg, tmp_path)
    table = read_csv(tmp_path / "noise.csv")
    assert [float(r["mse"]) for r in table] == [1e-4, 1e-3]
    for kind in ("noise", "adv", "adaptive"):
        assert {f"{kind}/delta_psnr", f"{kind}/psnr_in"} <= set(table[0])
    for row in table:  # noise uses the whole budget (input PSNR at the bound, up to 8-bit rounding)
        assert float(row["noise/psnr_in"]) == pytest.approx(float(row["psnr_in_bound"]), abs=0.5)
    per_image = read_csv(tmp_path / "noise_per_image.csv")
    assert len(per_image) == 2 * 2
    for row in per_image:  # the adaptive attack is never weaker than the transferred one, per image
        assert float(row["adaptive/delta_psnr"]) >= float(row["adv/delta_psnr"])
    assert (tmp_path / "noise_vs_attack.png").is_file()
    assert "test/noise/eps_0.01/delta_psnr" in metrics


def test_studies_refuse_contradictory_settings(checkpoints, photo_dir, tmp_path):
    with pytest.raises(ConfigError, match="attack=pgd"):
        run_study(study_config(photo_dir, checkpoints[0], "study=transfer", "max_images=1"), tmp_path)
    with pytest.raises(ConfigError, match="study.labels"):
        run_study(
            study_config(photo_dir, checkpoints[0], "study=recompression", "study.labels=[x,y]"), tmp_path
        )
    cfg = study_config(photo_dir, checkpoints[0], "study=noise")
    OmegaConf.update(cfg, "study.name", "jpeg")
    with pytest.raises(ConfigError, match="unknown study"):
        run_study(cfg, tmp_path)


def test_evaluate_entry_point_runs_a_study(checkpoints, photo_dir, tmp_path, monkeypatch):
    """`python evaluate.py study=recompression ...`, run in-process (a subprocess costs ~10 s of imports)."""
    monkeypatch.setattr(sys, "argv", [
        "evaluate.py", "study=recompression", "study.generations=2", "max_images=1", f"model.checkpoint={checkpoints[0]}",
        "data=folder", f"data.root={photo_dir}", f"hydra.run.dir={tmp_path}", "hydra/job_logging=disabled",
    ])  # fmt: skip
    with logging_restored():
        runpy.run_path(str(ROOT / "evaluate.py"), run_name="__main__")
    assert len(read_csv(tmp_path / "recompression.csv")) == 2
