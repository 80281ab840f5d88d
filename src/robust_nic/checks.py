"""Combinations of settings that would fail, or silently mean something else, only once work has started
are refused here, right after the settings are resolved and before any codec, data or directory is built:
one ConfigError whose message names the key and what to choose instead."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from robust_nic.codecs import CodecError, pretrained_url
from robust_nic.config import ConfigError, run_settings
from robust_nic.metrics import MS_SSIM_MIN_SIDE, MS_SSIM_WEIGHTS, ms_ssim_scales
from robust_nic.settings import group_settings

log = logging.getLogger(__name__)


def is_suite(attack: Mapping | None) -> bool:
    """An attack suite (attack=worst_case): several attacks, the strongest kept per image."""
    return bool((attack or {}).get("members"))


def check_training(settings: Mapping) -> None:
    """Cross-group rules of training (the optim and train groups check themselves: module.training_settings)."""
    steps = (settings.get("trainer") or {}).get("max_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(
            f"trainer.max_steps={steps} must be a whole number >= 1: the training length in batches (checkpoints, "
            "schedules and resumes count batches), e.g. trainer.max_steps=2000"
        )
    check_files(settings)
    check_folders(settings)
    attack = settings.get("attack") or {}
    if is_suite(attack):
        raise ConfigError(
            f"attack={attack.get('name')} is an evaluation suite (the strongest of several attacks per image) and "
            "cannot craft training examples; finetune with one attack: attack=pgd (fast) or attack=chen2023 (the paper's)"
        )
    patch = group_settings(settings, "data").patch_size
    if settings["loss"]["metric"] == "ms-ssim" and 0 < patch < MS_SSIM_MIN_SIDE:
        log.warning(
            "loss=ms_ssim on %d px crops uses %d of MS-SSIM's %d scales (all five need %d px; CompressAI trains "
            "its MS-SSIM models on 256 px crops: data.patch_size=256)",
            patch, ms_ssim_scales(patch), len(MS_SSIM_WEIGHTS), MS_SSIM_MIN_SIDE,
        )  # fmt: skip


# Studies that measure an attack, and those that take one budget (one job per budget: -m attack.eps=...).
ATTACKED_STUDIES = ("noise", "latents", "transfer")
ONE_BUDGET_STUDIES = ("latents", "transfer")
TRAINING_STUDIES = ("architectures",)  # they train the codecs they measure


def check_evaluation(settings: Mapping) -> None:
    study = (settings.get("study") or {}).get("name")
    attack = settings.get("attack") or {}
    check_batch_size(settings, attack)
    check_study_attack(study, attack)
    model = group_settings(settings, "model")
    if not model.pretrained and not model.checkpoint and study not in TRAINING_STUDIES:
        raise ConfigError(
            f"model={model.name} has no weights to evaluate: give a trained codec with model.checkpoint=PATH (e.g. "
            "outputs/train/RUN/checkpoints/last.ckpt), or model.pretrained=true for a CompressAI zoo codec"
        )
    check_files(settings)
    check_folders(settings)
    check_device(run_settings(settings).device)
    labels, codecs = (settings.get("study") or {}).get("labels"), (settings.get("study") or {}).get("codecs")
    if labels and len(labels) != len(codecs or []):
        raise ConfigError(f"study.labels has {len(labels)} names for {len(codecs or [])} study.codecs; give one per codec")


def check_files(settings: Mapping) -> None:
    """Every codec file the run loads exists (model.checkpoint, study.codecs), and zoo weights exist for
    the codec's metric and quality (the download itself happens when the codec is built)."""
    model = group_settings(settings, "model")
    named = [("model.checkpoint", model.checkpoint)] + [
        (f"study.codecs[{i}]", path) for i, path in enumerate((settings.get("study") or {}).get("codecs") or [])
    ]
    for key, path in named:
        if path and not Path(path).is_file():
            raise ConfigError(f"{key}={path} does not exist; pass the file of a trained codec (a .ckpt of this project "
                              "or a CompressAI state dict)")  # fmt: skip
    if model.pretrained and not model.checkpoint:
        try:
            pretrained_url(model.arch, model.quality, model.metric)
        except CodecError as err:
            raise ConfigError(
                f"{err}: train it from scratch with model.pretrained=false, or load weights with model.checkpoint=PATH"
            ) from err


def check_folders(settings: Mapping) -> None:
    """The image folders the run reads exist (data.root of data=folder, train_root, val_root, test_root)."""
    data = group_settings(settings, "data")
    roots = {"train_root": data.train_root, "val_root": data.val_root, "test_root": data.test_root}
    if data.name == "folder":
        roots["root"] = data.root
    for key, root in roots.items():
        if root and not Path(root).expanduser().is_dir():
            raise ConfigError(f"data.{key}={root} is not a folder; point it at a folder of png/jpg/webp images")


def check_device(name: str) -> None:
    """A CUDA device the machine has (the value's form is EvaluateRunSettings')."""
    import torch

    if name.startswith("cuda"):
        index = int(name.split(":")[1]) if ":" in name else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            found = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise ConfigError(f"device={name} but this machine has {found} CUDA device(s); use device=auto or device=cpu")


def check_study_attack(study: str | None, attack: Mapping) -> None:
    """The attack a study measures: present, one budget where the study takes one, and for study=noise
    one gradient attack with budgets as RMS (the study gives them as MSE)."""
    name = attack.get("name") or "none"
    if study in ATTACKED_STUDIES and name == "none":
        raise ConfigError(f"study={study} needs an attack: add e.g. attack=pgd attack.steps=100 (or attack=chen2023)")
    eps = attack.get("eps")
    if study in ONE_BUDGET_STUDIES and isinstance(eps, (list, tuple)) and len(eps) != 1:
        raise ConfigError(f"study={study} takes one attack.eps, got {list(eps)}; run one job per budget (-m)")
    if study != "noise":
        return
    if is_suite(attack) or name == "noise":
        raise ConfigError(
            f"study=noise compares random noise with one attack at the same budget; attack={name} is "
            f"{'a suite' if is_suite(attack) else 'the noise itself'}: choose attack=pgd, chen2023, ifgsm or mifgsm"
        )
    if attack.get("norm") != "rms":
        raise ConfigError(f"study=noise gives budgets as MSE (study.mse): use attack.norm=rms, not {attack.get('norm')}")


def check_batch_size(settings: Mapping, attack: Mapping) -> None:
    """eval.batch_size above 1 needs per-image random draws from every attack (its range: EvalSettings)."""
    size = group_settings(settings, "eval").batch_size
    proxies = [attack.get("proxy")] + [{**attack, **m}.get("proxy") for m in (attack.get("members") or {}).values()]
    if size > 1 and "noise" in proxies:
        raise ConfigError(
            "eval.batch_size > 1 with attack.proxy=noise: its latent noise is not drawn per image, so a batch "
            "would change each image's numbers; use eval.batch_size=1 or attack.proxy=ste"
        )
