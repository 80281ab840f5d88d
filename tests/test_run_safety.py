"""Runs never lose work: failed starts, resumes, logs across attempts, one owner per run directory,
output locations checked first, and interrupts that say how to continue."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import FAST, ROOT, compose_config
from lightning.pytorch.callbacks import Callback

from robust_nic.config import ConfigError
from robust_nic.run_dir import LOCK_NAME, RunDirError
from robust_nic.trackers import read_logged_rows
from robust_nic.training import train


def overrides(photo_dir, *extra):
    return [*FAST, f"data.root={photo_dir}", "trainer.log_every_n_steps=1", *extra]


def run_train(run_dir, photo_dir, *extra, callbacks=()):
    args = overrides(photo_dir, *extra)
    return train(compose_config("train", args), run_dir, extra_callbacks=callbacks, overrides=args)


def global_step(path):
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def resumed_from(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from")]


class RaiseAt(Callback):
    """Stands in for Ctrl-C or a crash: raises `error` once `batches` batches are done."""

    def __init__(self, batches, error):
        self.batches, self.error = batches, error

    def on_train_start(self, trainer, pl_module):
        if self.batches == 0:
            raise self.error

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step >= self.batches:  # one Lightning step per batch
            raise self.error


@pytest.fixture
def trained_run(tmp_path_factory, photo_dir):
    """A run directory with 4 trained batches (last.ckpt at global step 4)."""
    run_dir = tmp_path_factory.mktemp("run")
    assert run_train(run_dir, photo_dir)["steps"] == 4
    return run_dir


def test_a_failed_start_saves_nothing_and_the_run_resumes_by_its_training(
    trained_run, tmp_path, photo_dir, caplog
):
    ckpts = trained_run / "checkpoints"
    last = (ckpts / "last.ckpt").read_bytes()
    # A mistyped ckpt_path is a user error before any work (it must not write an untrained interrupted.ckpt).
    with pytest.raises(ConfigError, match="ckpt_path=.*no such file"):
        run_train(trained_run, photo_dir, f"ckpt_path={ckpts / 'lats.ckpt'}")
    # A crash before the first batch (here in on_train_start) saves nothing either: not in a fresh run
    # (an untrained interrupted.ckpt), not in this one (no more training than last.ckpt).
    fresh = tmp_path / "fresh"
    for run_dir in (fresh, trained_run):
        with pytest.raises(RuntimeError, match="bad start"):
            run_train(
                run_dir, photo_dir, "trainer.max_steps=6", callbacks=[RaiseAt(0, RuntimeError("bad start"))]
            )
    assert not list((fresh / "checkpoints").iterdir())
    assert not (ckpts / "interrupted.ckpt").exists() and (ckpts / "last.ckpt").read_bytes() == last

    # A fresher file with less training is not what a re-run continues from: the stored step decides.
    older = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True) | {"global_step": 2}
    torch.save(older, ckpts / "interrupted.ckpt")
    os.utime(ckpts / "last.ckpt", (time.time() - 60, time.time() - 60))
    caplog.set_level(logging.INFO, logger="robust_nic")
    assert run_train(trained_run, photo_dir, "trainer.max_steps=6")["steps"] == 6
    assert resumed_from(caplog) == [f"resuming from {ckpts / 'last.ckpt'} at batch 4"]
    # An explicit ckpt_path with less training than the run's own checkpoints does not roll the run back.
    caplog.clear()
    assert (
        run_train(trained_run, photo_dir, "trainer.max_steps=6", f"ckpt_path={ckpts / 'interrupted.ckpt'}")[
            "steps"
        ]
        == 6
    )
    assert (
        "holds more training" in caplog.text
        and "already trained 6 batches = trainer.max_steps" in caplog.text
    )


def test_a_finished_run_says_so_and_changes_nothing(trained_run, photo_dir, caplog):
    last = (trained_run / "checkpoints" / "last.ckpt").read_bytes()
    caplog.set_level(logging.INFO, logger="robust_nic")
    assert run_train(trained_run, photo_dir)["steps"] == 4  # same command again: trainer.max_steps=4
    assert "already trained 4 batches = trainer.max_steps" in caplog.text
    assert "raise trainer.max_steps to continue" in caplog.text
    assert (trained_run / "checkpoints" / "last.ckpt").read_bytes() == last
    assert sorted(p.name for p in (trained_run / "csv").iterdir()) == ["attempt_1", "attempt_1_start.txt"]  # no new attempt


def test_resumed_run_keeps_the_rows_of_every_attempt(trained_run, photo_dir):
    run_train(trained_run, photo_dir, "trainer.max_steps=8")
    rows = read_logged_rows(trained_run)
    train_steps = [(r["attempt"], int(r["step"])) for r in rows if r.get("train/loss")]
    assert train_steps == [(1, s) for s in range(4)] + [(2, s) for s in range(4, 8)]
    # validations every 2 batches, both attempts' rows kept
    assert [(r["attempt"], int(r["step"])) for r in rows if r.get("val/psnr")] == [
        (1, 1),
        (1, 3),
        (2, 5),
        (2, 7),
    ]


def test_blocked_checkpoint_folder_fails_before_training(tmp_path, photo_dir):
    (tmp_path / "checkpoints").write_text("not a folder")
    with pytest.raises(
        RunDirError, match=f"cannot write to {tmp_path / 'checkpoints'}: a file is in the way"
    ):
        run_train(tmp_path, photo_dir)
    assert not (tmp_path / "csv").exists() and not (tmp_path / "config.yaml").exists()  # no work started


def test_a_checkpoint_of_the_old_step_count_is_refused_with_what_to_do(trained_run, photo_dir):
    ckpts = trained_run / "checkpoints"
    old = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    old["global_step"] = 8  # 4 batches, counted twice (network and aux optimizer), as older checkpoints did
    del old["hyper_parameters"]["steps_per_batch"]
    torch.save(old, ckpts / "last.ckpt")
    before = sorted(p.name for p in ckpts.iterdir())
    with pytest.raises(ConfigError, match=r"older robust-nic.*model\.checkpoint="):
        run_train(trained_run, photo_dir, "trainer.max_steps=6")
    assert sorted(p.name for p in ckpts.iterdir()) == before


def test_ctrl_c_prints_the_command_that_resumes(tmp_path, photo_dir, caplog):
    run_dir = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="robust_nic")
    try:
        with pytest.raises(SystemExit):  # Lightning stops gracefully on KeyboardInterrupt, then exits 1
            run_train(run_dir, photo_dir, callbacks=[RaiseAt(2, KeyboardInterrupt())])
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores further Ctrl-C
    assert global_step(run_dir / "checkpoints" / "interrupted.ckpt") == 2  # one step per batch
    message = next(r.getMessage() for r in caplog.records if "interrupted after 2 batches" in r.getMessage())
    command = message.splitlines()[-1].strip()
    assert command.startswith("python train.py ") and command.endswith(f"hydra.run.dir={run_dir}")

    out = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (
        f"resuming from {run_dir / 'checkpoints' / 'interrupted.ckpt'} at batch 2" in out.stdout + out.stderr
    )
    assert global_step(run_dir / "checkpoints" / "last.ckpt") == 4
    assert [
        int(r["step"]) for r in read_logged_rows(run_dir) if r["attempt"] == 2 and r.get("train/loss")
    ] == [2, 3]


def hold_lock(run_dir):
    """Another process holding run_dir (as a running train.py would); returns it once the lock is taken."""
    code = (
        f"import sys, time; from pathlib import Path; from robust_nic.run_dir import acquire; "
        f"acquire(Path({str(run_dir)!r})); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_second_job_into_a_held_run_dir_exits_2_and_touches_nothing(tmp_path, photo_dir, script):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    first = {
        run_dir / ".hydra" / "overrides.yaml": "- model.quality=3\n",
        run_dir / "config.yaml": "first: run\n",
    }
    for path, text in first.items():
        path.write_text(text)
    holder = hold_lock(run_dir)
    try:
        codec = tmp_path / "codec.ckpt"  # evaluate.py's settings name a codec file; the lock stops it first
        codec.write_bytes(b"")
        args = FAST if script == "train.py" else ["data=folder", f"model.checkpoint={codec}"]
        out = subprocess.run(
            [sys.executable, script, *args, f"data.root={photo_dir}", f"hydra.run.dir={run_dir}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 2, out.stderr[-3000:]
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {run_dir} is in use by another job: pid {holder.pid} on ")
    assert "started 20" in error and "choose another hydra.run.dir" in error.lower()
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == sorted(
        p.relative_to(run_dir) for p in [*first, run_dir / ".hydra", run_dir / LOCK_NAME]
    )
    assert all(path.read_text() == text for path, text in first.items())


def test_stale_lock_of_a_dead_job_is_taken_over(tmp_path, photo_dir):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    holder.kill()  # killed: no chance to release its lock
    holder.wait()
    assert (run_dir / LOCK_NAME).is_file()
    out = subprocess.run(
        [
            sys.executable,
            "train.py",
            *FAST,
            f"data.root={photo_dir}",
            "trainer.max_steps=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"taking over the stale lock of {run_dir}: pid {holder.pid}" in out.stdout + out.stderr
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / LOCK_NAME).exists()


def test_resumed_run_continues_its_wandb_run_and_tensorboard_log(tmp_path, photo_dir, monkeypatch):
    import wandb
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    for logger, folder in (("wandb", "wandb"), ("tensorboard", "tensorboard")):
        for batches in (2, 4):  # a first attempt, then a resumed one
            run_train(tmp_path / folder, photo_dir, f"logger={logger}", f"trainer.max_steps={batches}")
            wandb.finish()
    runs = sorted((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    run_id = (tmp_path / "wandb" / "wandb_run_id").read_text().strip()
    assert len(runs) == 2 and all(r.name.split("-")[3] == run_id for r in runs)  # one W&B run, resumed
    events = EventAccumulator(str(tmp_path / "tensorboard" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2, 3]


def test_the_lock_is_one_per_directory_however_spelled_and_released(tmp_path):
    from robust_nic.run_dir import acquire, hold_run_dir, release

    (tmp_path / "other").mkdir()
    acquire(tmp_path / "other" / ".." / "run")  # as Hydra's callback would, before the job
    with hold_run_dir(tmp_path / "run"):  # as run_job does: the same owner, not a second job
        assert (tmp_path / "run" / LOCK_NAME).is_file()
    assert (tmp_path / "run" / LOCK_NAME).is_file()  # still held by the outer owner
    release(tmp_path / "run")
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_crash_mid_training_keeps_the_batches_done(tmp_path, photo_dir, caplog):
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_train(tmp_path, photo_dir, callbacks=[RaiseAt(3, RuntimeError("disk on fire"))])
    assert global_step(tmp_path / "checkpoints" / "interrupted.ckpt") == 3
    assert "training failed (RuntimeError) after 3 batches" in caplog.text
    assert "To continue once the cause is fixed, run:\n  python train.py " in caplog.text


def test_ctrl_c_in_a_job_is_one_line_and_exit_130(tmp_path, capsys):
    """No traceback: the job's own handlers kept the finished work; the user is told where."""
    import pytest

    from robust_nic.cli import run_job

    def job():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_job(job, tmp_path / "run")
    assert exit_info.value.code == 130
    assert f"interrupted (Ctrl-C): what finished is kept in {tmp_path / 'run'}" in capsys.readouterr().err
    assert not (tmp_path / "run" / "run.lock").exists()  # the lock is released
