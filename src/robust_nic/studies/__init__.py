"""Studies run by `python evaluate.py study=NAME`: recompression, transfer, noise, latents, architectures.

Each is one module that registers its run function and options with `@STUDIES.register(NAME, options=...)`
and writes CSV tables, figures, a flat metrics.json and a study.json manifest (read by the report).
A new study is a new module here (listed in STUDY_MODULES) plus conf/study/NAME.yaml.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robust_nic.config import ConfigError
from robust_nic.registry import Registry, RegistryError

STUDIES = Registry("study")
STUDY_MODULES = ("architectures", "latents", "noise", "recompression", "transfer")


@dataclass(frozen=True)
class CodecListOptions:
    """Studies that compare codecs: more checkpoints (same model.arch) beside the model.* codec."""

    codecs: list[str] = field(default_factory=list)
    labels: list[str] | None = None  # names for `codecs`, in order (default: from the file names)
    label: str | None = None  # name of the model.* codec (default: from model.checkpoint)


def load_studies() -> Registry:
    for module in STUDY_MODULES:
        importlib.import_module(f"robust_nic.studies.{module}")
    return STUDIES


def run_study(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the study named by cfg.study.name in run_dir; returns its flat metrics."""
    study = OmegaConf.to_container(cfg.study, resolve=True)
    name = study.get("name")
    try:
        entry = load_studies().get(name)
        STUDIES.options(name, study)  # unknown keys and bad values fail before any work
    except RegistryError as err:
        raise ConfigError(f"{err} (or study=none)") from err
    return entry.target(cfg, Path(run_dir))
