"""Studies run by `python evaluate.py study=NAME`: recompression, transfer, noise.

Each writes CSV tables, figures, a flat metrics.json and a study.json manifest (read by the report).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from robust_nic.config import ConfigError


def _studies() -> dict[str, Callable[[DictConfig, Path], dict]]:
    from robust_nic.studies.noise import run_noise
    from robust_nic.studies.recompression import run_recompression
    from robust_nic.studies.transfer import run_transfer

    return {"recompression": run_recompression, "transfer": run_transfer, "noise": run_noise}


def run_study(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the study named by cfg.study.name in run_dir; returns its flat metrics."""
    name = cfg.study.name
    studies = _studies()
    if name not in studies:
        raise ConfigError(f"unknown study {name!r}; choose study=none or one of {list(studies)}")
    return studies[name](cfg, Path(run_dir))
