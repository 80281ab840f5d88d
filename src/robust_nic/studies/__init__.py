"""Studies run by evaluate.py study=NAME (recompression, transfer, noise)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def run_study(cfg: DictConfig, run_dir: Path) -> dict:
    name = cfg.study.name
    raise ValueError(f"unknown study {name!r}")
