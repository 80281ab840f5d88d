"""Combinations of settings that would fail, or silently mean something else, only once work has started
are refused here, right after the settings are resolved and before any codec, data or directory is built:
one ConfigError whose message names the key and what to choose instead."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from robust_nic.config import ConfigError
from robust_nic.metrics import MS_SSIM_MIN_SIDE, MS_SSIM_WEIGHTS, ms_ssim_scales
from robust_nic.settings import group_settings

log = logging.getLogger(__name__)


def is_suite(attack: Mapping | None) -> bool:
    """An attack suite (attack=worst_case): several attacks, the strongest kept per image."""
    return bool((attack or {}).get("members"))


def check_training(settings: Mapping) -> None:
    """Cross-group rules of training (the optim and train groups check themselves: module.training_settings)."""
    attack = settings.get("attack") or {}
    if is_suite(attack):
        raise ConfigError(
            f"attack={attack.get('name')} is an evaluation suite (the strongest of several attacks per image) and "
            "cannot craft training examples; finetune with one attack: attack=pgd (fast) or attack=chen2023 (the paper's)"
        )
    patch = int((settings.get("data") or {}).get("patch_size") or 0)
    if settings["loss"]["metric"] == "ms-ssim" and 0 < patch < MS_SSIM_MIN_SIDE:
        log.warning(
            "loss=ms_ssim on %d px crops uses %d of MS-SSIM's %d scales (all five need %d px; CompressAI trains "
            "its MS-SSIM models on 256 px crops: data.patch_size=256)",
            patch, ms_ssim_scales(patch), len(MS_SSIM_WEIGHTS), MS_SSIM_MIN_SIDE,
        )  # fmt: skip


# Studies that measure an attack, and those that take one budget (one job per budget: -m attack.eps=...).
ATTACKED_STUDIES = ("noise", "latents", "transfer")
ONE_BUDGET_STUDIES = ("latents", "transfer")


def check_evaluation(settings: Mapping) -> None:
    study = (settings.get("study") or {}).get("name")
    attack = settings.get("attack") or {}
    check_batch_size(settings, attack)
    check_study_attack(study, attack)


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
