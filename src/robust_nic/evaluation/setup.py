"""What every evaluation and study starts from: resolved settings, device, the codecs, the test images,
the attack and its budgets. The runner (evaluate.py) and every study prepare through here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from compressai.models import CompressionModel
from omegaconf import DictConfig

from robust_nic.attacks import build_attack, with_defaults
from robust_nic.checks import check_evaluation
from robust_nic.coding_device import set_coding_device
from robust_nic.config import codec_from_settings, resolve, run_settings, save_settings
from robust_nic.data import split_files, whole_image_reader
from robust_nic.defenses import check_defense
from robust_nic.evaluation.labels import checkpoint_label, model_label, unique
from robust_nic.evaluation.metric_keys import attack_budgets
from robust_nic.evaluation.resume import check_same_settings
from robust_nic.fingerprints import training_image_check
from robust_nic.settings import EvaluateRunSettings, group_settings

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_eval_codec(settings: dict, device: torch.device):
    """The codec of `settings["model"]` with its weights (checks.check_evaluation refused a codec without
    any), in eval mode on `device`, ready to code."""
    codec = codec_from_settings(settings).to(device).eval()
    codec.update(force=True)
    return codec


@dataclass
class EvalInputs:
    settings: dict
    device: torch.device
    codecs: dict[str, CompressionModel]  # label -> codec; the model.* codec comes first
    files: list[Path]  # the test images (the first max_images of the test split)
    images: list[tuple[str, torch.Tensor]] | None = None  # (file name, 1x3xHxW in [0,1] on device)
    training_images: str = ""  # whether a test image was trained on (metrics.json's training_images)

    @property
    def study(self) -> dict:
        return self.settings["study"]

    @property
    def main_label(self) -> str:
        return next(iter(self.codecs))

    @property
    def codec(self) -> CompressionModel:
        """The evaluated codec (model.*)."""
        return self.codecs[self.main_label]

    @property
    def defense_cfg(self) -> dict:
        return dict(self.settings.get("defense") or {"name": "none"})


def checked_settings(cfg: DictConfig) -> dict:
    """The resolved evaluation settings, every rule checked: a mistake stops here, before any work."""
    settings = resolve(cfg)
    settings["attack"] = with_defaults(settings.get("attack"))
    check_defense(settings.get("defense"))  # its own keys only: first, whatever else the run lacks
    check_evaluation(settings)
    return settings


def prepare(
    cfg: DictConfig, run_dir: Path, read_images: bool = True, resume_from: str | None = None
) -> EvalInputs:
    """Resolve and save the config, seed, list the test images, load the codecs (model.* then study.codecs)
    and, with `read_images`, read every test image (the runner reads them one by one instead, skipping
    unreadable ones). `resume_from`: the rows file (per_image.csv) a re-run continues from; an evaluation
    run_dir already holds must have the same settings."""
    settings = checked_settings(cfg)
    run: EvaluateRunSettings = run_settings(settings)
    L.seed_everything(run.seed, verbose=False)
    device = pick_device(run.device)
    set_coding_device(run.coding.device)
    files = test_files(settings)  # first: a bad image list stops the run before any work
    training_images = training_image_check(
        settings["model"], checkpoint_paths(settings), files, group_settings(settings, "eval").allow_training_images
    )
    codecs = load_codecs(settings, device)
    if resume_from:
        check_same_settings(run_dir, settings, resume_from)
    save_settings(settings, run_dir)  # after loading: with the channels the checkpoints really hold
    inputs = EvalInputs(settings, device, codecs, files, training_images=training_images)
    if read_images:
        read_test_image = whole_image_reader(group_settings(settings, "data"))
        inputs.images = [(path.name, read_test_image(path)[None].to(device)) for path in files]
    return inputs


def checkpoint_paths(settings: dict) -> list[str]:
    """model.checkpoint and study.codecs: every checkpoint an evaluation or study measures."""
    study = settings.get("study") or {}
    paths = [settings["model"].get("checkpoint"), *(study.get("codecs") or [])]
    return [str(p) for p in paths if p]


def load_codecs(settings: dict, device: torch.device) -> dict[str, CompressionModel]:
    """The evaluated codec (model.*), then each checkpoint of study.codecs (same model.arch), labelled.

    study.labels (optional) names the study.codecs in order; study.label names the model.* codec.
    A study.codecs entry that is model.checkpoint itself is skipped.
    """
    study = settings.get("study") or {}
    paths = [str(p) for p in (study.get("codecs") or [])]
    labels = list(study.get("labels") or [])  # one per study.codecs entry (checks.check_evaluation)
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


def test_files(settings: dict) -> list[Path]:
    """The test split of `data`, the first `max_images` of it."""
    files = split_files(group_settings(settings, "data"))["test"]
    limit = run_settings(settings).max_images
    return files[:limit] if limit else files


def single_eps(settings: dict) -> float:
    """The one budget of a study that takes one (checks.check_study_attack refused several)."""
    return attack_budgets(settings["attack"])[0]


def required_attack(settings: dict):
    """The attack of the `attack` group of a study that measures one (checks.check_study_attack refused
    attack=none before any work)."""
    return build_attack(settings.get("attack"))
