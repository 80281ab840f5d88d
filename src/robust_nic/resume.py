"""Resuming training without losing work: which checkpoint holds the most training, saving on interrupt
only what adds training, and the command that continues an interrupted run."""

from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from robust_nic.checkpoints import save_atomically
from robust_nic.config import ConfigError

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted.ckpt"


# Lightning steps per training batch in checkpoints of this version (CodecModule steps the aux optimizer
# outside Lightning's count); checkpoints written before it have no such entry and took two.
STEPS_PER_BATCH = 1
OLD_STEPS_PER_BATCH = 2


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    global_step: int  # Lightning's count stored in the checkpoint
    steps_per_batch: int = STEPS_PER_BATCH

    @property
    def batches(self) -> int:
        return self.global_step // self.steps_per_batch

    def check_resumable(self) -> None:
        if self.steps_per_batch != STEPS_PER_BATCH:
            raise ConfigError(
                f"{self.path} ({self.batches} batches) was written by an older robust-nic that counted two steps "
                "per batch: it cannot be resumed. Continue from its weights in a new run directory with "
                f"model.checkpoint={self.path} (the optimizer state starts afresh)"
            )


def stored_step(path: Path) -> tuple[int, int]:
    """(Lightning's global_step, steps per batch) saved in a checkpoint (tensors memory-mapped, not read)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip checkpoint: mmap unsupported
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    per_batch = (checkpoint.get("hyper_parameters") or {}).get("steps_per_batch", OLD_STEPS_PER_BATCH)
    return int(checkpoint["global_step"]), int(per_batch)


def run_checkpoints(ckpt_dir: Path) -> list[Path]:
    """The checkpoints a run leaves: last, interrupted, best-*."""
    named = [ckpt_dir / "last.ckpt", ckpt_dir / INTERRUPTED]
    return [p for p in named if p.is_file()] + sorted(ckpt_dir.glob("best-*.ckpt"))


def most_trained(paths: list[Path]) -> ResumePoint | None:
    """The checkpoint with the highest stored global step (file times say nothing about training);
    unreadable files (a save cut short) are skipped with a warning."""
    best = None
    for path in paths:
        try:
            point = ResumePoint(path, *stored_step(path))
        except Exception as err:  # truncated or foreign file: never resume from it, say so
            log.warning("ignoring checkpoint %s: cannot read its training step (%s)", path, err)
            continue
        if best is None or point.batches > best.batches:
            best = point
    return best


def resume_point(ckpt_path: str | None, ckpt_dir: Path) -> ResumePoint | None:
    """Where training continues: the most trained of the run's own checkpoints and ckpt_path (a file, or
    `last` for the run's own only). A ckpt_path that is not a readable checkpoint is a ConfigError."""
    candidates = run_checkpoints(ckpt_dir)
    if ckpt_path not in (None, "", "last"):
        given = Path(str(ckpt_path))
        if not given.is_file():
            raise ConfigError(
                f"ckpt_path={ckpt_path}: no such file. Give a checkpoint file (RUN_DIR/checkpoints/last.ckpt), "
                "or re-run with the run's hydra.run.dir=RUN_DIR (it resumes by itself)"
            )
        try:
            stored_step(given)
        except KeyError as err:
            raise ConfigError(
                f"ckpt_path={ckpt_path} holds weights but no training state; to finetune from these weights "
                f"use model.checkpoint={ckpt_path} instead"
            ) from err
        except Exception as err:
            raise ConfigError(f"ckpt_path={ckpt_path} is not a readable training checkpoint: {err}") from err
        candidates.append(given)
    point = most_trained(candidates)
    if point is None and ckpt_path == "last":
        log.warning("ckpt_path=last: no checkpoint in %s yet; training from the start", ckpt_dir)
    elif (
        point is not None
        and ckpt_path not in (None, "", "last")
        and point.path.resolve() != Path(str(ckpt_path)).resolve()
    ):
        log.warning(
            "ckpt_path=%s is passed over: %s in this run directory holds more training", ckpt_path, point.path
        )
    return point


def resume_command(run_dir: Path, overrides: list[str] | None) -> str:
    """The command that continues this run: the same overrides, in the same run directory."""
    if sys.argv[0].startswith("robust-nic"):  # `robust-nic train` (cli.main names the app so)
        command = shlex.split(sys.argv[0])
    else:
        command = ["python", sys.argv[0] if Path(sys.argv[0]).name == "train.py" else "train.py"]
    kept = [o for o in overrides or [] if not o.startswith("hydra.run.dir=")]
    return shlex.join([*command, *kept, f"hydra.run.dir={run_dir}"])


class TrainingStopped(Exception):
    """Training saved a checkpoint and stopped on a signal (preemption, Ctrl-C) before trainer.max_steps."""

    def __init__(self, signal_name: str, checkpoint: Path, batches: int, command: str):
        self.signal_name, self.checkpoint, self.batches, self.command = signal_name, checkpoint, batches, command
        super().__init__(
            f"{signal_name}: training stopped after {batches} batches; {checkpoint} holds them. "
            f"To continue (a requeued job does the same), run:\n  {command}"
        )


class SaveOnInterrupt(Callback):
    """On Ctrl-C or a crash, save checkpoints/interrupted.ckpt, but only when it holds more training than
    the checkpoints already there (Lightning's OnExceptionCheckpoint also saved untrained step-0 files,
    which a re-run then resumed from, overwriting the good last.ckpt), and say how to continue."""

    def __init__(self, run_dir: Path, overrides: list[str] | None = None):
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.overrides = overrides

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        step = trainer.global_step
        existing = most_trained(run_checkpoints(self.ckpt_dir))
        if step > 0 and (existing is None or step > existing.batches):
            try:
                save_atomically(trainer, self.ckpt_dir / INTERRUPTED)
                existing = ResumePoint(self.ckpt_dir / INTERRUPTED, step)
            except Exception as err:  # never hide the original error behind this one
                log.error("could not save %s: %s", self.ckpt_dir / INTERRUPTED, err)
        interrupted = isinstance(exception, KeyboardInterrupt)
        if not trainer.is_global_zero or (existing is None and not interrupted):
            return  # a failed start: the error alone says what to fix
        what = "interrupted" if interrupted else f"failed ({type(exception).__name__})"
        saved = f"{existing.path} holds {existing.batches} batches" if existing else "no checkpoint yet"
        todo = "continue" if existing else "start again"
        if not interrupted:
            todo += " once the cause is fixed"
        log.warning(
            "training %s after %d batches; %s. To %s, run:\n  %s",
            what,
            step,
            saved,
            todo,
            resume_command(self.run_dir, self.overrides),
        )
