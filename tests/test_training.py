"""Rate-distortion training through the real entry points: loss falls, resume, checkpoints, trackers, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import FAST, ROOT, compose_config

from robust_nic.codecs import load_codec_checkpoint
from robust_nic.coding import code
from robust_nic.data import split_files
from robust_nic.images import read_image
from robust_nic.settings import DataSettings
from robust_nic.trackers import read_logged_rows
from robust_nic.training import train


def run_train(tmp_path, photo_dir, *overrides):
    cfg = compose_config("train", [*FAST, f"data.root={photo_dir}", *overrides])
    return train(cfg, tmp_path)


def logged(run_dir, key):
    return [(int(r["step"]), float(r[key])) for r in read_logged_rows(run_dir) if r.get(key)]


def test_tiny_codec_loss_falls(tmp_path, photo_dir):
    run_train(tmp_path, photo_dir, "trainer.max_steps=40", "trainer.val_check_interval=40",
              "trainer.log_every_n_steps=1", "optim.lr=3e-4")
    losses = [v for _, v in logged(tmp_path, "train/loss")]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert logged(tmp_path, "val/bpp") and logged(tmp_path, "val/psnr")


def test_resume_continues_step_count_and_checkpoint_keeps_bpp(tmp_path, photo_dir):
    first = tmp_path / "first"
    assert run_train(first, photo_dir)["steps"] == 4
    last = first / "checkpoints" / "last.ckpt"
    # weights_only loading (no pickled objects in our checkpoints)
    assert "cfg" in torch.load(last, map_location="cpu", weights_only=True)["hyper_parameters"]

    resumed = tmp_path / "resumed"
    results = run_train(resumed, photo_dir, "trainer.max_steps=8", "trainer.log_every_n_steps=1", f"ckpt_path={last}")
    assert results["steps"] == 8
    steps = [s for s, _ in logged(resumed, "train/loss")]
    assert steps and min(steps) >= 4  # continued, not restarted

    # A checkpoint saved after update() (validation) reloads to the same bitstream.
    from robust_nic.module import CodecModule  # noqa: F401  (Lightning path also used by resume above)

    x = read_image(split_files(DataSettings(name="folder", root=str(photo_dir)))["test"][0])[None]
    codec = load_codec_checkpoint("bmshj2018-hyperprior", resumed / "checkpoints" / "last.ckpt")
    again = load_codec_checkpoint("bmshj2018-hyperprior", resumed / "checkpoints" / "last.ckpt")
    assert torch.equal(code(codec, x).bpp, code(again, x).bpp)

    # Finetuning it at another quality than it was trained at (another lambda) is said out loud.
    saved_quality = torch.load(last, map_location="cpu", weights_only=True)["hyper_parameters"]["cfg"]["model"]["quality"]
    other = 1 if saved_quality != 1 else 2
    with pytest.warns(UserWarning, match=f"model.quality={saved_quality}"):
        load_codec_checkpoint("bmshj2018-hyperprior", last, expected={"quality": other, "metric": "mse"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_codec_checkpoint("bmshj2018-hyperprior", last, expected={"quality": saved_quality, "metric": "mse"})


def test_wandb_offline_without_credentials_writes_a_run(tmp_path, photo_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    # With an attack, validation also logs the source/adversarial/reconstruction image panel.
    run_train(tmp_path, photo_dir, "logger=wandb", "trainer.max_steps=2", "trainer.val_check_interval=2",
              "attack=pgd", "attack.steps=1")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, "expected an offline W&B run directory"
    assert list(runs[0].rglob("*.png")) or list(runs[0].rglob("*.wandb")), "expected logged media or run data"
    import wandb

    wandb.finish()


def test_tensorboard_logger(tmp_path, photo_dir):
    run_train(tmp_path, photo_dir, "logger=tensorboard", "trainer.max_steps=2", "trainer.val_check_interval=2")
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


# train.py with one extra callback: every rank writes a hash of each crop it trains on (and attacks)
# and its own train/adv_fraction to shards/rank<R>.jsonl.
DDP_SCRIPT = """
import hashlib, json, sys
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig

import robust_nic.conf  # the groups' schemas, which the YAMLs extend, before Hydra composes


class ShardRecorder(L.Callback):
    def __init__(self, folder):
        self.folder = Path(folder)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        crops = [hashlib.sha1(crop.cpu().numpy().tobytes()).hexdigest() for crop in batch]
        adv = float(trainer.callback_metrics["train/adv_fraction"])
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"rank{trainer.global_rank}.jsonl", "a") as handle:
            handle.write(json.dumps({"batch": batch_idx, "crops": crops, "adv_fraction": adv}) + "\\n")


@hydra.main(version_base="1.3", config_path=sys.argv.pop(1), config_name="train")
def main(cfg):
    from robust_nic.cli import run_job
    from robust_nic.training import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_job(lambda: train(cfg, run_dir, extra_callbacks=[ShardRecorder(run_dir / "shards")]))


if __name__ == "__main__":  # guard needed by ddp_spawn
    main()
"""


def test_two_process_cpu_ddp_finetunes(tmp_path, photo_dir):
    """2 gloo processes, each attacking its own shard of distinct crops in the inner loop (with the
    consistency term); only rank 0 writes."""
    run_dir = tmp_path / "ddp"
    script = tmp_path / "train_recording_shards.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, str(script), str(ROOT / "src" / "robust_nic" / "conf"), "trainer=ddp_cpu", *FAST, "trainer.accelerator=cpu",
         f"data.root={photo_dir}", f"hydra.run.dir={run_dir}", "attack=pgd", "attack.steps=1",
         "train.consistency_weight=1.0"],  # the consistency path runs a second (rounded) forward
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list(run_dir.glob("csv/*/metrics.csv"))) == 1 and not list(tmp_path.glob("outputs"))
    assert logged(run_dir, "val/adv/delta_psnr")
    assert not (run_dir / "run.lock").exists()  # taken by the launching process only, released at the end
    assert "world_size=2" in (out.stdout + out.stderr) or "distributed_backend=gloo" in (out.stdout + out.stderr)
    codec = load_codec_checkpoint("bmshj2018-hyperprior", run_dir / "checkpoints" / "last.ckpt")
    assert codec(torch.rand(1, 3, 64, 64))["x_hat"].shape == (1, 3, 64, 64)
    # Each rank trained on, and attacked, its own crops: 4 batches of 4 crops each, none shared.
    shards = {}
    for rank in (0, 1):
        records = [json.loads(line) for line in (run_dir / "shards" / f"rank{rank}.jsonl").read_text().splitlines()]
        assert len(records) == 4 and all(r["adv_fraction"] == 1.0 for r in records), records
        shards[rank] = [crop for r in records for crop in r["crops"]]
        assert len(shards[rank]) == 16
    assert not set(shards[0]) & set(shards[1]), "the two ranks trained on identical crops"


def test_crop_batches_depend_only_on_seed_rank_and_batch_index(photo_dir):
    from robust_nic.data import CropBatches, ImageFiles

    images = ImageFiles(split_files(DataSettings(name="folder", root=str(photo_dir)))["train"])

    def batches(seed=0, rank=0, first=0, count=3):
        stream = iter(CropBatches(images, 64, 4, seed=seed, rank=rank, first_batch=first))
        return [next(stream) for _ in range(count)]

    torch.manual_seed(0)  # the global RNG plays no part
    first = batches()
    assert all(b.shape == (4, 3, 64, 64) for b in first)
    assert all(torch.equal(a, b) for a, b in zip(first, batches(), strict=True))
    assert not torch.equal(first[0], first[1])  # every batch is new
    # A run resumed at batch 1 sees exactly batches 1 and 2 of the uninterrupted run.
    assert all(torch.equal(a, b) for a, b in zip(first[1:], batches(first=1, count=2), strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, batches(rank=1), strict=True))
    assert not torch.equal(first[0], batches(seed=1)[0])


def test_loader_workers_keep_the_batch_order(photo_dir):
    """With two loader workers the loader still returns batch 0, 1, 2, ... of the stream."""
    from torch.utils.data import DataLoader

    from robust_nic.data import CropBatches, ImageFiles

    images = ImageFiles(split_files(DataSettings(name="folder", root=str(photo_dir)))["train"])
    dataset = CropBatches(images, 64, 2, seed=3, first_batch=5)
    loader = iter(DataLoader(dataset, batch_size=None, num_workers=2))
    got = [next(loader) for _ in range(4)]
    assert all(torch.equal(g, dataset.batch(5 + i)) for i, g in enumerate(got))


@pytest.mark.parametrize("override, message", [("model=cheng2020", "allowed qualities"), ("data.root=/nonexistent", "data.root=/nonexistent is not a folder")])
def test_cli_errors_exit_nonzero_with_a_message(tmp_path, override, message):
    extra = ["model.quality=9"] if override == "model=cheng2020" else []
    out = subprocess.run(
        [sys.executable, "train.py", "data=folder", "data.root=/tmp", override, *extra, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0 and message in out.stderr


def test_ms_ssim_loss_trains_and_validates(tmp_path):
    cfg = compose_config("train", ["loss=ms_ssim", "model.channels=[16,24]", "data.patch_size=192", "data.batch_size=2",
                                   "trainer.max_steps=2", "trainer.val_check_interval=2",
                                   "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"])
    results = train(cfg, tmp_path)
    assert results["train/ms_ssim_loss"] > 0 and results["val/rd_loss"] > 0 and 0 < results["val/ms_ssim"] < 1


def test_trainer_logger_and_callbacks_come_from_config(tmp_path, photo_dir):
    """conf/trainer, conf/logger and conf/callbacks are instantiated (`_target_`): a user adds a Lightning
    callback from the command line, and a Trainer argument is passed through as it is."""
    run_train(tmp_path, photo_dir, "trainer.max_steps=3", "trainer.val_check_interval=3",
              "+callbacks.lr_monitor._target_=lightning.pytorch.callbacks.LearningRateMonitor",
              "+callbacks.lr_monitor.logging_interval=step", "trainer.log_every_n_steps=1")  # fmt: skip
    lrs = logged(tmp_path, "lr-Adam/pg1")  # the network's transforms (pg2: the entropy model's density)
    # the multistep schedule drops at 0.8 x 3 batches = batch 2: schedules count batches
    assert lrs == [(0, pytest.approx(1e-4)), (1, pytest.approx(1e-4)), (2, pytest.approx(1e-5))]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and list((tmp_path / "checkpoints").glob("best-*"))
