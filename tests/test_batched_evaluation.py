"""Batched evaluation (eval.batch_size): images of one size are attacked and coded together, and every
image's row holds the numbers it gets alone, with its own random draws (random starts, restarts, noise).

Tolerance: a batch changes only the order of floating-point sums inside the convolutions (measured: up to
~1e-6 in the reconstructions), so the 8-bit adversarial images, and with them the real bitstreams (bpp),
are identical, and PSNRs agree to 1e-4 dB; bpp_est (a sum of log-likelihoods) to 1e-6 bits per pixel."""

from __future__ import annotations

import csv
import math

import pytest
from conftest import compose_config

from robust_nic.codecs import export_codec
from robust_nic.config import ConfigError
from robust_nic.evaluation.runner import evaluate, size_batches

TOLERANCE = {"bpp_est": 1e-6}  # any other measured column: 1e-4 (dB for PSNRs); bpp: exactly
IDENTICAL = ("/bpp", "ms_ssim_scales", "eps", "output_unchanged", "from_transfer")


@pytest.fixture(scope="module")
def checkpoint(small_codec, tmp_path_factory):
    return export_codec(small_codec, tmp_path_factory.mktemp("ckpt") / "codec.pth.tar")


def run(run_dir, photo_dir, checkpoint, batch_size, *overrides):
    cfg = compose_config("evaluate", [f"model.checkpoint={checkpoint}", "data=folder", f"data.root={photo_dir}",
                                      "device=cpu", "save_images=false", "progress=false",
                                      f"eval.batch_size={batch_size}", *overrides])  # fmt: skip
    evaluate(cfg, run_dir)
    with open(run_dir / "per_image.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def assert_same_rows(single: list[dict], batched: list[dict]) -> None:
    assert [(r["image"], r.get("eps")) for r in batched] == [(r["image"], r.get("eps")) for r in single]
    for one, many in zip(single, batched, strict=True):
        assert one.keys() == many.keys()
        for key, value in one.items():
            if key == "image" or key.endswith("_s"):  # wall-clock times differ between any two runs
                continue
            if key.endswith(IDENTICAL):
                assert many[key] == value, (one["image"], key)
                continue
            tolerance = TOLERANCE.get(key.split("/")[-1], 1e-4)
            a, b = float(value), float(many[key])
            assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tolerance, (one["image"], key, a, b)


@pytest.mark.parametrize("attack", [
    ["attack=pgd", "attack.steps=6", "attack.random_start=true", "attack.restarts=2", "attack.eps=[0.01,0.02]"],
    ["attack=noise", "attack.eps=0.02"],
])  # fmt: skip
def test_batched_rows_equal_one_image_at_a_time(tmp_path, photo_dir, checkpoint, attack):
    single = run(tmp_path / "single", photo_dir, checkpoint, 1, *attack)
    batched = run(tmp_path / "batched", photo_dir, checkpoint, 3, *attack)
    assert len({r["image"] for r in single}) == 4  # three 96x96 photos in one batch, the 70x90 one alone
    assert_same_rows(single, batched)
    # The seeds are per image: each image's random draws differ from the others' (not one shared stream).
    assert len({r["adv/psnr_in"] for r in batched if r["eps"] == single[0]["eps"]}) > 1


def test_a_batched_run_continues_a_one_at_a_time_run_per_image(tmp_path, photo_dir, checkpoint):
    attack = ["attack=pgd", "attack.steps=4", "attack.random_start=true"]
    single = run(tmp_path / "single", photo_dir, checkpoint, 1, *attack)
    run_dir = tmp_path / "resumed"
    run(run_dir, photo_dir, checkpoint, 1, *attack, "max_images=1")  # a run stopped after its first image
    assert_same_rows(single, run(run_dir, photo_dir, checkpoint, 3, *attack))


def test_size_batches_group_by_size_in_file_order(photo_dir):
    images = sorted(photo_dir.rglob("*.*"))
    batches = size_batches(list(enumerate(images)), 2)
    assert [[index for index, _ in batch] for batch in batches] == [[0, 2], [1], [3]]
    assert [len(batch) for batch in size_batches(list(enumerate(images)), 1)] == [1, 1, 1, 1]


@pytest.mark.parametrize("value", [0, "two", 1.5])
def test_a_bad_batch_size_is_refused_naming_the_key(tmp_path, photo_dir, checkpoint, value):
    with pytest.raises(ConfigError, match="eval.batch_size"):
        run(tmp_path, photo_dir, checkpoint, value, "attack=pgd")


def test_latent_noise_proxy_needs_one_image_at_a_time(tmp_path, photo_dir, checkpoint):
    with pytest.raises(ConfigError, match="eval.batch_size > 1 with attack.proxy=noise"):
        run(tmp_path, photo_dir, checkpoint, 2, "attack=pgd", "attack.proxy=noise")
