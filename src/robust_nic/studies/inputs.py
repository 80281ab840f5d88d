"""What every study starts from: resolved settings, the codecs to compare, the test images, the attack."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from compressai.models import CompressionModel
from omegaconf import DictConfig

from robust_nic.attacks import build_attack
from robust_nic.config import ConfigError, resolve, save_settings
from robust_nic.data import split_files, whole_image_limit
from robust_nic.evaluation.runner import eps_values, load_eval_codec, pick_device
from robust_nic.images import read_image
from robust_nic.studies.labels import checkpoint_label, model_label, unique

log = logging.getLogger(__name__)


@dataclass
class StudyInputs:
    settings: dict
    device: torch.device
    codecs: dict[str, CompressionModel]  # label -> codec; the model.* codec comes first
    images: list[tuple[str, torch.Tensor]]  # (file name, 1x3xHxW in [0,1] on device)

    @property
    def study(self) -> dict:
        return self.settings["study"]

    @property
    def main_label(self) -> str:
        return next(iter(self.codecs))

    @property
    def defense_cfg(self) -> dict:
        return dict(self.settings.get("defense") or {"name": "none"})


def prepare(cfg: DictConfig, run_dir: Path) -> StudyInputs:
    """Resolve and save the config, seed, load the codecs (model.* then study.codecs) and test images."""
    settings = resolve(cfg)
    L.seed_everything(int(settings.get("seed", 0)), verbose=False)
    device = pick_device(settings.get("device"))
    codecs = load_codecs(settings, device)
    save_settings(settings, run_dir)  # after loading: with the channels the checkpoints really hold
    return StudyInputs(settings, device, codecs, load_images(settings, device))


def load_codecs(settings: dict, device: torch.device) -> dict[str, CompressionModel]:
    """The evaluated codec (model.*), then each checkpoint of study.codecs (same model.arch), labelled.

    study.labels (optional) names the study.codecs in order; study.label names the model.* codec.
    A study.codecs entry that is model.checkpoint itself is skipped.
    """
    study = settings["study"]
    paths = [str(p) for p in (study.get("codecs") or [])]
    labels = list(study.get("labels") or [])
    if labels and len(labels) != len(paths):
        raise ConfigError(
            f"study.labels has {len(labels)} names for {len(paths)} study.codecs; give one per codec"
        )
    main = settings["model"].get("checkpoint")
    codecs = {study.get("label") or model_label(settings["model"]): load_eval_codec(settings, device)}
    for index, path in enumerate(paths):
        if main and Path(path).resolve() == Path(main).resolve():
            log.info("study.codecs: %s is model.checkpoint; not loaded twice", path)
            continue
        model = settings["model"] | {"checkpoint": path, "pretrained": False}
        label = unique(labels[index] if labels else checkpoint_label(path), codecs)
        codecs[label] = load_eval_codec({"model": model}, device)
    return codecs


def load_images(settings: dict, device: torch.device) -> list[tuple[str, torch.Tensor]]:
    """The test split of `data`, the first `max_images` of it."""
    files = split_files(settings["data"])["test"]
    limit = settings.get("max_images")
    files = files[:limit] if limit else files
    max_pixels = whole_image_limit(settings["data"])
    return [(path.name, read_image(path, max_pixels)[None].to(device)) for path in files]


def single_eps(settings: dict, study: str) -> float:
    budgets = eps_values(settings["attack"])
    if len(budgets) != 1:
        raise ConfigError(f"study={study} takes one attack.eps, got {budgets}; run one job per budget (-m)")
    return budgets[0]


def required_attack(settings: dict, study: str):
    """The attack of the `attack` group; studies that compare attacks refuse attack=none."""
    attack = build_attack(settings.get("attack"))
    if attack is None:
        raise ConfigError(
            f"study={study} needs an attack: add e.g. attack=pgd attack.steps=100 (or attack=chen2023)"
        )
    return attack
