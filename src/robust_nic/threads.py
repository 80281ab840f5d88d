"""How many CPU threads torch uses: a visible setting, printed at start.

Torch's default (all cores) is right for one job alone; with other jobs on the same cores its threads
spin-wait for each other (bench/results/threads_cpu.json: two jobs side by side on 2 cores made 0.59
batches/s in total with torch's default threads, 11.66 with threads=1 each). Parallel
jobs on one machine should use `threads=1` each, or OMP_NUM_THREADS=1 for a whole sweep.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("robust_nic")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def configure_threads(requested: int | None) -> int:
    """Set torch's intra-op threads from `threads=` (or OMP_NUM_THREADS, else all cores) and say so."""
    from robust_nic.config import ConfigError

    if requested is not None:
        count, source = requested, "threads="
    elif os.environ.get("OMP_NUM_THREADS", "").strip():
        count, source = os.environ["OMP_NUM_THREADS"].strip(), "OMP_NUM_THREADS="
    else:
        count, source = available_cores(), "all cores: "
    try:
        count = int(count)
    except ValueError as err:
        raise ConfigError(f"{source}{count!r} is not a whole number of threads") from err
    if count < 1:
        raise ConfigError(f"{source}{count} must be >= 1 (threads=1 for each of several jobs sharing a machine)")
    torch.set_num_threads(count)
    log.info(
        "torch CPU threads: %d (%s%d; %d cores available; several jobs on one machine: threads=1 each)",
        count, source, count, available_cores(),
    )
    return count
