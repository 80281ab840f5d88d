"""No test image is ever trained on: a checkpoint records its training and validation images' pixel
fingerprints, and evaluate.py refuses to measure it on any of them, a re-encoded copy included."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, compose_config, logging_restored, photo
from PIL import Image

from robust_nic.evaluation.runner import evaluate
from robust_nic.fingerprints import (
    KEY,
    UNKNOWN_PRETRAINED,
    TrainingImageError,
    fingerprint,
    training_image_check,
)
from robust_nic.training import train


@pytest.fixture(scope="module")
def trained(photo_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train")
    with logging_restored():
        train(compose_config("train", [*FAST, f"data.root={photo_dir}", "trainer.max_steps=2", "logger=none"]),
              run_dir)  # fmt: skip
    return run_dir / "checkpoints" / "last.ckpt"


def test_the_fingerprint_is_of_the_pixels_not_the_file(tmp_path):
    pixels = photo("rocket.jpg")[:96, :96]
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "b.webp", lossless=True)
    Image.fromarray(pixels[:, ::-1].copy()).save(tmp_path / "mirrored.png")
    assert fingerprint(tmp_path / "a.png") == fingerprint(tmp_path / "b.webp") != fingerprint(tmp_path / "mirrored.png")


def test_a_checkpoint_records_its_training_and_validation_images(trained, photo_dir):
    recorded = torch.load(trained, map_location="cpu", weights_only=True)[KEY]
    names = sorted(recorded["train"].values()) + sorted(recorded["val"].values())
    assert sorted(names) == ["astronaut.png", "chelsea_70x90.png", "coffee.png", "rocket.jpg"]
    assert len(recorded["val"]) == 1 and not set(recorded["val"]) & set(recorded["train"])


def test_evaluating_on_a_reencoded_training_image_is_refused_naming_it(trained, photo_dir, tmp_path):
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    # A training photo decoded and saved again as PNG under another name, beside an unseen photo.
    Image.open(photo_dir / "rocket.jpg").convert("RGB").save(test_dir / "launch.png")
    Image.fromarray(photo("motorcycle_right.png")[:96, :96]).save(test_dir / "motorcycle.png")
    args = [f"model.checkpoint={trained}", "data=folder", f"data.root={test_dir}", "device=cpu",
            "model.channels=[16,24]", "progress=false"]  # fmt: skip
    with pytest.raises(TrainingImageError, match=r"launch.png = (train|val) image rocket.jpg of .*last.ckpt"):
        evaluate(compose_config("evaluate", args), tmp_path / "refused")
    assert not (tmp_path / "refused" / "per_image.csv").exists()  # refused before any work

    metrics = evaluate(compose_config("evaluate", [*args, "eval.allow_training_images=true"]), tmp_path / "allowed")
    written = json.loads((tmp_path / "allowed" / "metrics.json").read_text())
    assert written["training_images"] == metrics["training_images"]
    assert written["training_images"].startswith("allowed by eval.allow_training_images: launch.png = ")
    assert metrics["test/images"] == 2

    (test_dir / "launch.png").unlink()
    metrics = evaluate(compose_config("evaluate", args), tmp_path / "clean")
    assert metrics["training_images"] == "none of the 1 test images was trained or validated on"


def test_pretrained_weights_say_their_training_images_are_unknown():
    assert training_image_check({"pretrained": True}, [], [], allow=False) == UNKNOWN_PRETRAINED
