"""study=latents: latent range ("safe zone") and coded symbols vs the entropy model, via evaluate.py."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import run_script, train_small_codec

from robust_nic.codecs import export_codec
from robust_nic.coding import pad
from robust_nic.images import read_image


@pytest.fixture(scope="module")
def latents_run(photo_dir, tmp_path_factory):
    """One real `python evaluate.py study=latents` run: a codec and a second checkpoint, a strong PGD attack."""
    root = tmp_path_factory.mktemp("latents")
    codec = train_small_codec(steps=40, channels=(16, 24))
    first = export_codec(codec, root / "a.pth.tar")
    second = export_codec(train_small_codec(steps=20, channels=(16, 24), seed=1), root / "b.pth.tar")
    out = root / "run"
    argv = ["evaluate.py", "study=latents", f"model.checkpoint={first}", f"study.codecs=[{second}]",
            "max_images=2", "attack=pgd", "attack.steps=5", "attack.eps=0.05", "data=folder",
            f"data.root={photo_dir}", "device=cpu", f"hydra.run.dir={out}", "hydra/job_logging=disabled"]  # fmt: skip
    run_script("evaluate.py", argv[1:])
    return out, codec


def read_csv(path):
    return list(csv.DictReader(open(path)))


def test_latent_range_matches_g_a_and_attack_leaves_the_safe_zone(latents_run, photo_dir):
    out, codec = latents_run
    rows = read_csv(out / "latent_range.csv")
    assert {r["codec"] for r in rows} == {"a", "b"}
    for r in rows:
        assert float(r["natural_min"]) <= float(r["natural_max"])
        assert float(r["adversarial_min"]) <= float(r["adversarial_max"])
    first_image = rows[0]["image"]
    path = next(p for p in photo_dir.rglob("*") if p.name == first_image)
    with torch.no_grad():
        y = codec.g_a(pad(read_image(path)[None])[0])[0]
    mine = [r for r in rows if r["codec"] == "a" and r["image"] == first_image]
    assert len(mine) == y.shape[0]
    for r in mine:
        c = int(r["channel"])
        assert float(r["natural_max"]) == pytest.approx(float(y[c].max()), abs=1e-4)
        assert float(r["natural_min"]) == pytest.approx(float(y[c].min()), abs=1e-4)
    ranks = sorted(mine, key=lambda r: int(r["rank_by_natural_max"]))
    assert [float(r["natural_max"]) for r in ranks] == sorted(
        (float(r["natural_max"]) for r in mine), reverse=True
    )
    # a strong attack pushes some channel of y outside the natural range
    assert any(float(r["adversarial_max"]) > float(r["natural_max"]) or
               float(r["adversarial_min"]) < float(r["natural_min"]) for r in mine)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    outside = metrics[f"study/latents/a/{first_image}/outside"]
    assert 0 < outside <= 1
    assert metrics["study/latents/a/adv/bpp"] > 0


def test_symbol_histograms_count_every_latent_and_pmfs_sum_to_one(latents_run, photo_dir):
    out, codec = latents_run
    rows = read_csv(out / "latent_symbols.csv")
    images = [p for p in sorted(photo_dir.rglob("*")) if p.suffix in (".png", ".jpg")]
    names = {r["image"] for r in read_csv(out / "latents.csv") if r["codec"] == "a"}
    with torch.no_grad():
        elements = sum(codec.g_a(pad(read_image(p)[None])[0]).numel() for p in images if p.name in names)
    for kind in ("natural", "adversarial"):
        mine = [r for r in rows if r["codec"] == "a" and r["input"] == kind]
        y = [r for r in mine if r["entropy_model"] == "gaussian_conditional" and r["symbol"] != "escape"]
        assert sum(int(r["count"]) for r in y) == elements  # escapes are also counted in their symbol's bin
        for model in ("gaussian_conditional", "entropy_bottleneck"):
            total = sum(float(r["predicted_probability"]) for r in mine if r["entropy_model"] == model)
            assert total == pytest.approx(1.0, abs=1e-3)
    summary = read_csv(out / "latents.csv")
    assert all(float(r["adv/bpp"]) > 0 and float(r["clean/bpp"]) > 0 for r in summary)
    for png in [
        "latent_symbols_a.png",
        "latent_symbols_b.png",
        *(f"latent_range_a_{n.rsplit('.', 1)[0]}.png" for n in names),
    ]:
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    manifest = json.loads((out / "study.json").read_text())
    assert manifest["study"] == "latents"
