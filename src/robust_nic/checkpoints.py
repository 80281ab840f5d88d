"""The checkpoints a training run writes: `last.ckpt` is always the latest model, a kill costs at most
`checkpoint.every_minutes` of training, and a preemption signal saves and stops at a batch boundary."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

log = logging.getLogger(__name__)

LAST = "last.ckpt"
# Ctrl-C, Slurm's preemption and requeue signals (--signal=USR1@90; submitit uses USR2), kill's default.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")


def write_partial(trainer, path: Path) -> Path:
    """trainer.save_checkpoint into `path`.partial, flushed to disk. Collective under DDP (every rank
    calls it; rank 0 writes)."""
    partial = Path(path).with_name(Path(path).name + ".partial")
    trainer.save_checkpoint(partial, weights_only=False)  # the full training state, for resuming
    if trainer.is_global_zero:
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
    return partial


def publish(trainer, partial: Path, path: Path) -> None:
    """Rename a written checkpoint over `path`: a kill at any moment leaves a whole file there."""
    if trainer.is_global_zero:
        os.replace(partial, path)


def save_atomically(trainer, path: Path) -> None:
    publish(trainer, write_partial(trainer, path), Path(path))


class StopRequested(Exception):
    """Raised at a batch boundary after a stop signal's checkpoint is saved: ends fit() at once (a
    `should_stop` would first run an extra validation the uninterrupted run never ran)."""

    def __init__(self, signal_name: str):
        self.signal_name = signal_name
        super().__init__(f"stopped on {signal_name}")


class FiniteModelCheckpoint(ModelCheckpoint):
    """best-{step}.ckpt by the monitored value, never by a NaN/inf one, written atomically.

    Lightning ranks NaN as the worst value, yet still saves it while fewer than save_top_k checkpoints
    exist: with every validation NaN, the "best" checkpoint would be a broken model.
    """

    def _save_topk_checkpoint(self, trainer, monitor_candidates) -> None:
        value = monitor_candidates.get(self.monitor) if self.monitor else None
        if value is not None and not torch.isfinite(torch.as_tensor(value)).all():
            log.warning("%s is %s at step %d: not a candidate for the best checkpoint", self.monitor,
                        float(value), trainer.global_step)  # fmt: skip
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        save_atomically(trainer, Path(filepath))
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        for logger in trainer.loggers:
            logger.after_save_checkpoint(self)


class LastCheckpoint(Checkpoint):
    """Keeps `dirpath/last.ckpt` the latest model whatever the monitored metric did.

    Written after every validation (after the best-* callback, so its state is current), at the end of
    training, every `every_minutes` of training, and when a stop signal (Ctrl-C, SIGTERM, SIGUSR1/2)
    arrives: then training stops at the next batch boundary (StopRequested) and `stop_signal` names the
    signal. A second Ctrl-C interrupts at once. Lightning's own `last` (since 2.6 written only with a new
    best) plays no part.

    A checkpoint between validations is taken at the end of a batch (where Lightning resumes exactly) and
    renamed into place at the start of the next one, once that batch's logged row is on disk: the file
    never holds training whose rows could still be lost. So a resumed run repeats no work and skips none.
    """

    def __init__(self, dirpath: str | Path, every_minutes: float | None = 10.0):
        self.dirpath = Path(dirpath)
        self.every_minutes = None if every_minutes is None else float(every_minutes)
        if self.every_minutes is not None and self.every_minutes < 0:
            raise ValueError(f"checkpoint.every_minutes={every_minutes} must be >= 0 (0: every batch) or null")
        self.stop_signal: str | None = None
        self._saved_at: float = time.monotonic()
        self._saved_step: int = -1
        self._partial: Path | None = None  # written, not yet renamed into place
        self._previous_handlers: dict[int, object] = {}

    @property
    def path(self) -> Path:
        return self.dirpath / LAST

    # ---- signals: note them, act at the next batch boundary ---------------------------------------

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.stop_signal == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.stop_signal is None:
            log.warning("%s received: saving a checkpoint at the next batch boundary, then stopping", name)
        self.stop_signal = self.stop_signal or name

    def on_train_start(self, trainer, pl_module) -> None:
        # Installed here, after Lightning registered its own (it would raise SIGTERMException mid-loop).
        self._saved_at = time.monotonic()
        self._saved_step = trainer.global_step  # a resumed run starts from a checkpoint of this step
        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread
                pass

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    # ---- when to save ----------------------------------------------------------------------------

    def _time_is_up(self) -> bool:
        if self.every_minutes is None:
            return False
        return time.monotonic() - self._saved_at >= self.every_minutes * 60

    def _agreed(self, trainer, *flags: bool) -> list[bool]:
        """One decision for every DDP rank (clocks and signals differ between ranks): each flag is true
        when it is on any rank. One collective call per batch."""
        if trainer.world_size <= 1:
            return list(flags)
        local = torch.tensor([float(f) for f in flags], device=trainer.strategy.root_device)
        return [bool(v > 0) for v in trainer.strategy.reduce(local, reduce_op="sum")]

    @staticmethod
    def _validates_now(trainer) -> bool:
        """Whether Lightning validates right after this batch (trainer.val_check_interval in batches)."""
        interval = trainer.val_check_batch
        if not trainer.enable_validation or not isinstance(interval, int) or interval <= 0:
            return False
        return trainer.global_step % interval == 0

    def _finish(self, trainer) -> None:
        """The rows logged so far reach the disk, then the written checkpoint takes last.ckpt's place."""
        if self._partial is None:
            return
        for logger in trainer.loggers:
            logger.save()
        publish(trainer, self._partial, self.path)
        self._partial = None

    def _save(self, trainer, finish: bool) -> None:
        if trainer.global_step == self._saved_step or trainer.sanity_checking:
            return
        self._partial = write_partial(trainer, self.path)
        self._saved_at, self._saved_step = time.monotonic(), trainer.global_step
        if finish:
            self._finish(trainer)

    def _stop_if_signalled(self, trainer) -> None:
        if self.stop_signal is not None and trainer.global_step < (trainer.max_steps or 0):
            raise StopRequested(self.stop_signal)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        signalled, time_is_up = self._agreed(trainer, self.stop_signal is not None, self._time_is_up())
        if signalled and self.stop_signal is None:
            self.stop_signal = "SIGTERM"  # another rank was signalled
        if signalled or time_is_up:
            if self._validates_now(trainer):
                return  # saved at the validation's end, with its results
            self._save(trainer, finish=False)  # renamed into place once this batch's row is written

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._partial is not None:
            self._finish(trainer)
            self._stop_if_signalled(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._save(trainer, finish=True)
        self._stop_if_signalled(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # A checkpoint waiting for its batch's row: the row is logged by now (an exception inside a batch,
        # or at the start of the next one), so it takes its place.
        if self._partial is None:
            return
        try:
            self._finish(trainer)
        except Exception as err:  # never hide the original error behind this one
            log.error("could not finish %s: %s", self.path, err)

    def on_train_end(self, trainer, pl_module) -> None:
        self._finish(trainer)
        self._save(trainer, finish=True)

    def state_dict(self) -> dict:
        return {}
