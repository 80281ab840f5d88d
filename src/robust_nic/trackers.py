"""Experiment trackers (CSV, TensorBoard, W&B) that work offline."""

from __future__ import annotations

import csv
import logging
import netrc
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def wandb_mode(requested: str | None) -> str:
    """`auto` means online only when credentials exist; otherwise offline (never an interactive prompt)."""
    if requested and requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    log.info("W&B: no credentials found, logging offline (sync later with `wandb sync`)")
    return "offline"


WANDB_RUN_ID_FILE = "wandb_run_id"
# The logger classes this module adds run-time arguments to (by their `_target_`'s class name).
KINDS = {"CSVLogger": "csv", "TensorBoardLogger": "tensorboard", "WandbLogger": "wandb"}


def logger_kind(cfg: Mapping | None) -> str | None:
    """csv, tensorboard, wandb, `other` (any other Lightning logger), or None for logger=none."""
    target = (cfg or {}).get("_target_")
    return KINDS.get(str(target).rsplit(".", 1)[-1], "other") if target else None


def logger_dir(cfg: Mapping, run_dir: Path) -> Path | None:
    """Where the configured logger writes under run_dir (None for logger=none)."""
    kind = logger_kind(cfg)
    if kind == "csv":
        return run_dir / (cfg.get("name") or "csv")
    if kind == "tensorboard":
        return run_dir / (cfg.get("version") or "tensorboard")
    return run_dir / "wandb" if kind == "wandb" else None


def csv_attempts(run_dir: Path) -> dict[int, Path]:
    """attempt number -> its csv/attempt_<n> folder."""
    folders = (run_dir / "csv").glob("attempt_*")
    return {int(f.name.split("_", 1)[1]): f for f in folders if f.name.split("_", 1)[1].isdigit()}


def next_csv_attempt(run_dir: Path) -> str:
    """`attempt_<n>`: each (re)start of a run logs its own csv/attempt_<n>/metrics.csv, since Lightning's
    CSVLogger rewrites an existing metrics.csv (a resumed run lost the earlier rows)."""
    return f"attempt_{max(csv_attempts(run_dir), default=0) + 1}"


def attempt_start_file(folder: Path) -> Path:
    """csv/attempt_<n>_start.txt: the batch attempt n started at (beside its folder, which Lightning's
    CSVLogger wants empty)."""
    return folder.with_name(folder.name + "_start.txt")


def record_attempt_start(logger, batches: int) -> None:
    """Note in a CSV attempt's folder the batch it starts at: its rows from there on supersede the rows
    earlier attempts logged after their last checkpoint (see read_logged_rows)."""
    from lightning.pytorch.loggers import CSVLogger

    if isinstance(logger, CSVLogger):
        start = attempt_start_file(Path(logger.log_dir))
        start.parent.mkdir(parents=True, exist_ok=True)
        start.write_text(f"{int(batches)}\n")


def read_logged_rows(run_dir: Path) -> list[dict]:
    """The CSV rows of a run, each step's rows once, with their `attempt` number (csv/metrics.csv of runs
    made before attempts existed counts as attempt 0). An attempt that resumed at batch k re-did
    everything from k: rows an earlier attempt logged at step >= k (after its last checkpoint, before it
    was killed) are superseded and left out. Values stay strings, as in the files."""
    files = [(0, run_dir / "csv" / "metrics.csv", None)]
    files += [(n, folder / "metrics.csv", attempt_start_file(folder)) for n, folder in csv_attempts(run_dir).items()]
    rows = []
    for attempt, path, start_file in sorted(files, key=lambda f: f[0]):
        if start_file is not None and start_file.is_file():
            start = int(start_file.read_text().strip())
            rows = [row for row in rows if int(row["step"]) < start]
        if path.is_file():
            with open(path, newline="") as handle:
                rows += [{**row, "attempt": attempt} for row in csv.DictReader(handle)]
    return rows


def wandb_run_id(run_dir: Path) -> str:
    """The run directory's W&B run id, stored there so a resumed run continues the same W&B run."""
    from lightning.pytorch.utilities import rank_zero_only

    path = run_dir / WANDB_RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
    if rank_zero_only.rank == 0:
        path.write_text(run_id + "\n")
    return run_id


def build_logger(cfg: Mapping, run_dir: Path, run_config: Mapping | None = None):
    """The `logger` group's Lightning logger (hydra.utils.instantiate), writing under run_dir; False for
    logger=none. A resumed run (same run_dir) keeps every earlier row (CSV: one attempt_<n> folder per
    start), event file (TensorBoard) and W&B run (the id stored in the run directory)."""
    from hydra.utils import instantiate

    kind = logger_kind(cfg)
    if kind is None:
        return False
    runtime = {"save_dir": str(run_dir)}
    if kind == "csv":
        runtime["version"] = next_csv_attempt(run_dir)
    if kind == "wandb":
        os.environ.setdefault("WANDB_SILENT", "true")
        runtime |= {"id": wandb_run_id(run_dir), "mode": wandb_mode(cfg.get("mode"))}
    logger = instantiate(dict(cfg), **runtime)
    if kind == "wandb" and run_config is not None:
        logger.log_hyperparams(dict(run_config))
    return logger


def log_image_panel(logger, key: str, images: list[torch.Tensor], captions: list[str], step: int) -> None:
    """One row of images (first of each batch) to W&B or TensorBoard; other loggers ignore it.

    Logged as 8-bit: wandb 0.31 turns float images in [0, 1] into all-zero PNGs."""
    from lightning.pytorch import loggers

    from robust_nic.images import to_uint8

    first = [to_uint8(img[0]) for img in images]
    if isinstance(logger, loggers.WandbLogger):
        hwc = [img.permute(1, 2, 0).numpy() for img in first]  # wandb.Image reads HWC uint8 arrays as is
        logger.log_image(key=key, images=hwc, caption=captions, step=step)
    elif isinstance(logger, loggers.TensorBoardLogger):
        for caption, img in zip(captions, first, strict=True):
            logger.experiment.add_image(f"{key}/{caption}", img, global_step=step)  # CHW uint8: not rescaled
