"""Non-finite values are never turned into numbers: NaN stays NaN in rows and logs, fails the evaluation
naming the image and stage, and never wins checkpoint selection."""

from __future__ import annotations

import csv
import json
import math

import lightning as L
import pytest
import torch
from conftest import FAST, compose_config

from robust_nic.cli import run_job
from robust_nic.codecs import export_codec
from robust_nic.evaluation.runner import evaluate
from robust_nic.trackers import read_logged_rows
from robust_nic.training import train


class NaNDecoderAtValidation(L.Callback):
    """Makes the codec's decoder output NaN during one validation (as a desynchronised GPU decode did),
    then restores its weights: training itself never sees NaN."""

    def __init__(self, which: int):
        self.which, self.saved, self.global_steps = which, None, []

    def on_validation_epoch_start(self, trainer, pl_module):
        if len(self.global_steps) == self.which:
            bias = list(pl_module.codec.g_s.parameters())[-1]
            self.saved = bias.detach().clone()
            with torch.no_grad():
                bias.fill_(float("nan"))
        self.global_steps.append(trainer.global_step)  # what checkpoints record

    def on_validation_epoch_end(self, trainer, pl_module):
        if self.saved is not None:
            with torch.no_grad():
                list(pl_module.codec.g_s.parameters())[-1].copy_(self.saved)
            self.saved = None


@pytest.mark.parametrize("which", [0, 1])
def test_nan_validation_is_logged_as_nan_and_never_the_best_checkpoint(tmp_path, photo_dir, which):
    nan_once = NaNDecoderAtValidation(which)
    args = [*FAST, f"data.root={photo_dir}", "trainer.val_check_interval=1", "trainer.log_every_n_steps=1"]
    train(compose_config("train", args), tmp_path, extra_callbacks=[nan_once])
    rows = sorted((r for r in read_logged_rows(tmp_path) if r.get("val/rd_loss")), key=lambda r: int(r["step"]))
    # Every validation logged its values, the NaN one included (as NaN: not dropped, not a capped 100 dB).
    logged = dict(zip(nan_once.global_steps, [(float(r["val/rd_loss"]), float(r["val/psnr"])) for r in rows], strict=True))
    nan_step = nan_once.global_steps[which]
    assert all(math.isnan(v) for v in logged[nan_step])
    assert all(math.isfinite(v) for step, values in logged.items() if step != nan_step for v in values)

    best = json.loads((tmp_path / "train_metrics.json").read_text())["best_checkpoint"]
    best_step = torch.load(best, map_location="cpu", weights_only=True)["global_step"]
    finite = {step: loss for step, (loss, _) in logged.items() if step != nan_step}
    assert best_step != nan_step and best_step == min(finite, key=finite.get)


@pytest.fixture(scope="module")
def checkpoint(small_codec, tmp_path_factory):
    return export_codec(small_codec, tmp_path_factory.mktemp("ckpt") / "codec.pth.tar")


def decode_nan_at(monkeypatch, codec_type, call: int, error: type[BaseException] | None = None):
    """The codec's real decoder, except that its `call`-th use (1-based) returns NaN pixels, as a
    desynchronised GPU decode did (or raises `error`, as a crash or Ctrl-C would)."""
    real, calls = codec_type.decompress, []

    def decompress(self, strings, shape):
        out = real(self, strings, shape)
        calls.append(1)
        if len(calls) == call:
            if error is not None:
                raise error()
            out["x_hat"] = torch.full_like(out["x_hat"], float("nan"))
        return out

    monkeypatch.setattr(codec_type, "decompress", decompress)


def evaluate_three(tmp_path, photo_dir, checkpoint):
    # Test images in order: astronaut.png, chelsea_70x90.png, rocket.jpg (clean then attacked decode each).
    cfg = compose_config("evaluate", [f"model.checkpoint={checkpoint}", "data=folder", f"data.root={photo_dir}",
                                      "device=cpu", "attack=pgd", "attack.steps=2", "max_images=3",
                                      "save_images=false", "progress=false"])  # fmt: skip
    return run_job(lambda: evaluate(cfg, tmp_path))


@pytest.mark.parametrize(("call", "stage", "nan_key", "finite_key"), [
    (3, "clean decode", "clean/psnr", None),
    (4, "adv attacked decode", "adv/psnr_out", "clean/psnr"),
])  # fmt: skip
def test_one_nan_image_fails_the_evaluation_naming_it_after_writing_the_others(
    tmp_path, photo_dir, checkpoint, small_codec, monkeypatch, capsys, call, stage, nan_key, finite_key
):
    decode_nan_at(monkeypatch, type(small_codec), call)
    with pytest.raises(SystemExit) as exit_info:
        evaluate_three(tmp_path, photo_dir, checkpoint)
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(error) == 1  # one line, no traceback
    assert "chelsea_70x90.png" in error[0] and stage in error[0] and "astronaut" not in error[0]

    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "per_image.csv"))}
    assert list(rows) == ["astronaut.png", "chelsea_70x90.png", "rocket.jpg"]
    assert math.isnan(float(rows["chelsea_70x90.png"][nan_key]))  # NaN, not a capped 100 dB
    if finite_key:
        assert math.isfinite(float(rows["chelsea_70x90.png"][finite_key]))
    for good in ("astronaut.png", "rocket.jpg"):
        assert all(math.isfinite(float(v)) for k, v in rows[good].items() if "/" in k)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["partial"] is True and "chelsea_70x90.png" in metrics["partial_reason"]
    assert metrics["test/images"] == 2  # the two finite images, never the NaN one
    expected = (float(rows["astronaut.png"]["clean/psnr"]) + float(rows["rocket.jpg"]["clean/psnr"])) / 2
    assert metrics["test/clean/psnr"] == pytest.approx(expected)
    assert not (tmp_path / "results_compressai.json").exists()


def test_a_run_that_dies_keeps_the_finished_rows_and_a_partial_metrics_json(
    tmp_path, photo_dir, checkpoint, small_codec, monkeypatch
):
    decode_nan_at(monkeypatch, type(small_codec), 3, error=KeyboardInterrupt)  # Ctrl-C in the third image
    cfg = compose_config("evaluate", [f"model.checkpoint={checkpoint}", "data=folder", f"data.root={photo_dir}",
                                      "device=cpu", "save_images=false"])  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "per_image.csv")))
    assert [r["image"] for r in rows] == ["astronaut.png", "chelsea_70x90.png"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["partial"] is True and "KeyboardInterrupt" in metrics["partial_reason"]
    assert metrics["test/images"] == 2
    assert metrics["test/clean/psnr"] == pytest.approx(sum(float(r["clean/psnr"]) for r in rows) / 2)


class NaNDecoderAlways(NaNDecoderAtValidation):
    def on_validation_epoch_start(self, trainer, pl_module):
        self.which = len(self.global_steps)  # every validation
        super().on_validation_epoch_start(trainer, pl_module)


def test_only_nan_validations_leave_no_best_checkpoint(tmp_path, photo_dir):
    """Lightning would still save the first NaN validation as "best" (fewer than save_top_k saved)."""
    args = [*FAST, f"data.root={photo_dir}", "trainer.val_check_interval=2"]
    train(compose_config("train", args), tmp_path, extra_callbacks=[NaNDecoderAlways(0)])
    assert not list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()  # the training itself is kept
    assert not json.loads((tmp_path / "train_metrics.json").read_text())["best_checkpoint"]
