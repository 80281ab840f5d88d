"""A run directory has one owner and is writable: the lock taken by train.py / evaluate.py, and the
check that output locations accept files before any work starts.

Kept free of torch/Lightning imports: the lock is taken by a Hydra callback before the job starts.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import json
import logging
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"

# Locks this process holds, by lock-file path, with a count (the Hydra callback and run_job both hold it).
_held: dict[Path, int] = {}


class RunDirError(Exception):
    """The run directory is in use by another job, or an output location cannot be written."""


def is_launching_process() -> bool:
    """False in processes that DDP launchers start for ranks > 0 (they share rank 0's run directory)."""
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        value = os.environ.get(name)
        if value not in (None, "", "0"):
            return False
    return True


def check_writable(*dirs: Path) -> None:
    """Create each directory and write a probe file in it; the error names the path that fails."""
    for folder in dirs:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
                pass
        except (FileExistsError, NotADirectoryError) as err:
            raise RunDirError(
                f"cannot write to {folder}: a file is in the way ({err.filename}); "
                "move it away or choose another hydra.run.dir"
            ) from err
        except OSError as err:
            raise RunDirError(
                f"cannot write to {folder}: {err.strerror}; choose another hydra.run.dir"
            ) from err


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _holder_alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine: cannot tell, assume it runs
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    started = holder.get("pid_start")
    return started is None or _process_start(pid) in (None, started)


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')} (`{holder.get('command')}`)"


def _try_create(lock: Path, content: str) -> bool:
    """Atomically create the lock file with its content; False when it already exists."""
    tmp = lock.with_name(f".{lock.name}.{os.getpid()}.tmp")
    tmp.write_text(content)
    try:
        os.link(tmp, lock)  # atomic and complete: a reader never sees a half-written lock
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem: exclusive create (a crash mid-write is unlikely)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def acquire(run_dir: Path) -> None:
    """Take the run directory's lock (again, if this process holds it already)."""
    run_dir = Path(run_dir).resolve()  # one key however the path is spelled (Hydra's callback vs the job)
    lock = run_dir / LOCK_NAME
    if lock in _held:
        _held[lock] += 1
        return
    check_writable(run_dir)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "pid_start": _process_start(os.getpid()),
        "command": " ".join(sys.argv),
    }
    for _ in range(3):
        if _try_create(lock, json.dumps(me)):
            _held[lock] = 1
            return
        try:
            holder = json.loads(lock.read_text())
        except FileNotFoundError:
            continue  # released meanwhile: try again
        except (OSError, ValueError) as err:
            raise RunDirError(
                f"{run_dir} has an unreadable lock file {lock} ({err}); if no job runs there, delete it"
            ) from err
        if _holder_alive(holder):
            raise RunDirError(
                f"{run_dir} is in use by another job: {_describe(holder)}. Choose another hydra.run.dir, "
                f"or wait for that job to end (if it is gone, delete {lock})"
            )
        log.warning("taking over the stale lock of %s: %s is no longer running", run_dir, _describe(holder))
        lock.unlink(missing_ok=True)
    raise RunDirError(
        f"could not take the lock {lock}: other jobs keep taking it; choose another hydra.run.dir"
    )


def release(run_dir: Path) -> None:
    lock = Path(run_dir).resolve() / LOCK_NAME
    if lock not in _held:
        return
    _held[lock] -= 1
    if _held[lock] == 0:
        del _held[lock]
        _remove_if_mine(lock)


def _remove_if_mine(lock: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(lock.read_text()).get("pid") == os.getpid():
            lock.unlink()


@atexit.register
def _release_all() -> None:
    """sys.exit() inside a Hydra job skips Hydra's end callbacks: never leave our lock behind."""
    for lock in list(_held):
        _remove_if_mine(lock)
    _held.clear()


@contextlib.contextmanager
def hold_run_dir(run_dir: Path | None) -> Iterator[None]:
    """Own run_dir for the duration (only the launching process; DDP ranks > 0 share it)."""
    if run_dir is None or not is_launching_process():
        yield
        return
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)


def _acquire_or_exit(run_dir: Path) -> None:
    try:
        acquire(run_dir)
    except RunDirError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra is a dependency; the lock itself does not need it
    _HydraCallback = object


class RunDirLock(_HydraCallback):
    """Hydra callback: lock hydra.run.dir (hydra.sweep.dir for -m) before Hydra writes .hydra/ there, so a
    second job into the same directory fails before touching the first one's files."""

    def on_run_start(self, config, **kwargs) -> None:
        if is_launching_process():
            self.run_dir = Path(str(config.hydra.run.dir))
            _acquire_or_exit(self.run_dir)

    def on_run_end(self, config, **kwargs) -> None:
        if getattr(self, "run_dir", None) is not None:
            release(self.run_dir)

    def on_multirun_start(self, config, **kwargs) -> None:
        if is_launching_process():
            self.sweep_dir = Path(str(config.hydra.sweep.dir))
            _acquire_or_exit(self.sweep_dir)

    def on_multirun_end(self, config, **kwargs) -> None:
        if getattr(self, "sweep_dir", None) is not None:
            release(self.sweep_dir)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a Hydra multirun (0, 1, ..., 9, 10, ...), in job-number order."""
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=natural_order)


def natural_order(path: Path) -> tuple:
    """A sort key that puts multirun/2 before multirun/10 (numbers in names compare as numbers)."""
    return tuple(
        tuple((0, int(piece), "") if piece.isdigit() else (1, 0, piece) for piece in re.split(r"(\d+)", part) if piece)
        for part in Path(path).parts
    )
