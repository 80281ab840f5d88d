"""Checkpoints a lab can trust: last.ckpt is the final model, stop signals save at a batch boundary, and a run
killed at any moment and re-run ends exactly where the uninterrupted run ends (weights, optimizer states,
logged rows)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, ROOT, compose_config, logging_restored
from lightning.pytorch.callbacks import Callback

from robust_nic.cli import end_as_signalled
from robust_nic.resume import TrainingStopped, stored_step
from robust_nic.trackers import read_logged_rows
from robust_nic.training import train

RUN = [*FAST, "trainer.max_steps=8", "trainer.val_check_interval=3", "trainer.log_every_n_steps=1",
       "data.max_val_images=1"]  # fmt: skip
ADVERSARIAL = ["attack=pgd", "attack.eps=0.01", "attack.steps=2", "attack.seed=null", "train.adv_ratio=0.5"]


def stored(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same(a, b) -> bool:
    """Exactly equal nested checkpoint contents (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def rows(run_dir: Path) -> list[dict]:
    """Logged rows without the attempt that logged them (nor the empty columns of its file)."""
    return [{k: v for k, v in row.items() if k != "attempt" and v != ""} for row in read_logged_rows(run_dir)]


def assert_same_run(resumed: Path, uninterrupted: Path, steps: int = 8) -> None:
    a, b = stored(resumed / "checkpoints" / "last.ckpt"), stored(uninterrupted / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == steps
    assert same(a["state_dict"], b["state_dict"]), "weights differ"
    assert same(a["optimizer_states"], b["optimizer_states"]), "optimizer states differ"
    assert same(a["lr_schedulers"], b["lr_schedulers"])
    assert rows(resumed) == rows(uninterrupted)
    best = sorted(p.name for p in (resumed / "checkpoints").glob("best-*.ckpt"))
    assert best == sorted(p.name for p in (uninterrupted / "checkpoints").glob("best-*.ckpt"))


class SignalAt(Callback):
    """Sends `signum` to this process while batch `batch` runs."""

    def __init__(self, batch: int, signum: int):
        self.batch, self.signum = batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.batch:
            os.kill(os.getpid(), self.signum)


def test_last_checkpoint_is_the_final_model_when_validation_gets_worse(tmp_path, photo_dir):
    """Lightning 2.6 writes `last` only with a new best: with mode=max every later validation of a falling
    loss is "worse", and its last.ckpt stayed at the first validation."""
    train(compose_config("train", [*RUN, f"data.root={photo_dir}", "callbacks.model_checkpoint.mode=max",
                                   "trainer.max_steps=7"]), tmp_path)  # fmt: skip
    assert stored(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 7
    assert not list((tmp_path / "checkpoints").glob("*.partial"))


@pytest.mark.parametrize("extra", [[], ADVERSARIAL], ids=["rd", "adversarial"])
def test_signals_stop_at_a_batch_boundary_and_the_rerun_equals_an_uninterrupted_run(tmp_path, photo_dir, extra):
    cfg = [*RUN, f"data.root={photo_dir}", *extra]
    train(compose_config("train", cfg), tmp_path / "whole")
    stops = []
    for batch, signum in ((1, signal.SIGUSR1), (2, signal.SIGTERM), (5, signal.SIGINT)):
        with pytest.raises(TrainingStopped) as stopped:
            train(compose_config("train", cfg), tmp_path / "stopped", extra_callbacks=[SignalAt(batch, signum)])
        stops.append((stopped.value.signal_name, stopped.value.batches))
        assert "hydra.run.dir=" in stopped.value.command
    # Batch 2's stop waits for the validation after it (interval 3) and keeps its results.
    assert stops == [("SIGUSR1", 2), ("SIGTERM", 3), ("SIGINT", 6)]
    train(compose_config("train", cfg), tmp_path / "stopped")
    assert_same_run(tmp_path / "stopped", tmp_path / "whole")


def test_a_periodic_checkpoint_bounds_what_a_kill_loses(tmp_path, photo_dir):
    """checkpoint.every_minutes=0 saves at every batch boundary: a run cut short resumes at its last batch."""
    cfg = [*RUN, f"data.root={photo_dir}", "checkpoint.every_minutes=0", "trainer.val_check_interval=100"]

    class Crash(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == 5:
                raise RuntimeError("node lost")

    with pytest.raises(RuntimeError, match="node lost"):
        train(compose_config("train", [*cfg, "callbacks.save_on_interrupt=null"]), tmp_path, extra_callbacks=[Crash()])
    assert stored(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 5


def test_a_stopped_run_exits_128_plus_the_signal_after_a_launchers_handler_ran():
    """A job script requeues on status 138 (SIGUSR1); a launcher's own handler (submitit's requeue on SIGUSR2)
    still runs first."""
    called = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: called.append(signum))
    try:
        with pytest.raises(SystemExit) as ended:
            end_as_signalled("SIGUSR2")
        assert ended.value.code == 128 + signal.SIGUSR2 and called == [signal.SIGUSR2]
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        with pytest.raises(SystemExit) as ended:
            end_as_signalled("SIGUSR1")  # the default action would kill the process: exit instead
        assert ended.value.code == 138
    finally:
        signal.signal(signal.SIGUSR2, previous)


def run_train_process(run_dir: Path, overrides: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def reached(run: subprocess.Popen, last: Path, step: int, timeout: float = 300) -> bool:
    """Wait until the running job's last.ckpt holds `step` batches (saved after every batch here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.poll() is None:
        if last.is_file() and stored_step(last)[0] >= step:
            return True
        time.sleep(0.02)
    return False


def chaos(tmp_path: Path, photo_dir: Path, extra: list[str], seed: int) -> None:
    """Kill the run at random moments with mixed signals (SIGKILL included): once during start-up, then at a
    random point of a random later batch (mid-batch, mid-save, mid-validation), re-run the same command each
    time until it finishes, and compare with the uninterrupted run."""
    steps = 12  # room for five kills after start-up
    overrides = [*RUN, f"data.root={photo_dir}", f"trainer.max_steps={steps}", "checkpoint.every_minutes=0",
                 "threads=1", *extra]  # fmt: skip
    with logging_restored():
        whole = run_train_process(tmp_path / "whole", overrides)
        assert whole.wait(timeout=300) == 0, whole.stderr.read()
    moments = random.Random(seed)
    signals = [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1, signal.SIGINT, signal.SIGKILL]
    kills, mid_training, done = 0, 0, 0
    last = tmp_path / "chaos" / "checkpoints" / "last.ckpt"
    for signum in signals:
        run = run_train_process(tmp_path / "chaos", overrides)
        if kills == 0:
            time.sleep(moments.uniform(0.5, 3.0))  # start-up: no checkpoint yet
        else:
            target = min(done + moments.randint(1, 2), steps - 1)
            if not reached(run, last, target):
                break
            time.sleep(moments.uniform(0.0, 0.4))  # somewhere in the next batch, its save or a validation
            mid_training += run.poll() is None
        if run.poll() is not None:
            break
        run.send_signal(signum)
        kills += 1
        code = run.wait(timeout=300)
        if signum == signal.SIGKILL:
            assert code == -signal.SIGKILL
        done = stored_step(last)[0] if last.is_file() else 0
        if signum != signal.SIGKILL and code == -signum:
            assert done == steps, run.stderr.read()  # the signal came after training, during shut-down
        elif signum != signal.SIGKILL:
            assert code in (0, 130, 128 + signum), run.stderr.read()  # stopped: 128 + N, as a job script expects
        if done >= steps - 1:
            break
    final = run_train_process(tmp_path / "chaos", overrides)
    assert final.wait(timeout=300) == 0, final.stderr.read()
    assert kills >= 4 and mid_training >= 2, (kills, mid_training)
    assert_same_run(tmp_path / "chaos", tmp_path / "whole", steps)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ADVERSARIAL], ids=["rd", "adversarial"])
def test_chaos_kills_at_random_moments(tmp_path, photo_dir, extra):
    chaos(tmp_path, photo_dir, extra, seed=len(extra))


@pytest.mark.slow
def test_a_two_process_ddp_run_resumes_exactly(tmp_path, photo_dir):
    """trainer=ddp_cpu (2 gloo processes): stopped after 3 batches and continued to 6, it equals 6 batches
    in one go, each rank drawing its own crops and attack starts from (seed, rank, batch index). (The lr
    schedule is constant so that the shorter first run trains alike.)"""
    overrides = [*RUN, f"data.root={photo_dir}", "trainer=ddp_cpu", "trainer.accelerator=cpu", "optim.scheduler=none",
                 "trainer.val_check_interval=2", *ADVERSARIAL]  # fmt: skip
    for run_dir, steps in ((tmp_path / "whole", [6]), (tmp_path / "resumed", [3, 6])):
        for max_steps in steps:
            run = run_train_process(run_dir, [*overrides, f"trainer.max_steps={max_steps}"])
            assert run.wait(timeout=600) == 0, run.stderr.read()[-3000:]
    a, b = (stored(tmp_path / name / "checkpoints" / "last.ckpt") for name in ("resumed", "whole"))
    assert a["global_step"] == b["global_step"] == 6
    assert same(a["state_dict"], b["state_dict"]) and same(a["optimizer_states"], b["optimizer_states"])
    # The first run ended its (endless) epoch at max_steps, so the continuation counts epoch 1.
    without_epoch = [[{k: v for k, v in r.items() if k != "epoch"} for r in rows(tmp_path / n)] for n in ("resumed", "whole")]
    assert without_epoch[0] == without_epoch[1]
