"""Turning a composed Hydra config into resolved plain settings and objects."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robust_nic.codecs import CodecError, build_codec, check_arch, check_metric, check_quality, lambda_for

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the checkout's Hydra configs (editable install)


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """The config train.py / evaluate.py would see, for scripts and tests that call the jobs directly."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)

class ConfigError(ValueError):
    """Settings that contradict each other; the message says which to change."""


LOSS_METRICS = {"mse": "mse", "ms_ssim": "ms-ssim", "ms-ssim": "ms-ssim"}


def resolve(cfg: DictConfig) -> dict:
    """Plain, fully resolved settings with derived defaults filled in (lambda, lr); validates names."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    model, loss = settings["model"], settings["loss"]
    metric = LOSS_METRICS.get(str(loss.get("metric")))
    if metric is None:
        raise CodecError(f"unknown loss metric {loss.get('metric')!r}; choose loss=mse or loss=ms_ssim")
    loss["metric"] = metric
    model["metric"] = model.get("metric") or metric
    check_arch(model["arch"])
    check_metric(model["metric"])
    check_quality(model["arch"], int(model["quality"]))
    if loss.get("lmbda") is None:
        loss["lmbda"] = lambda_for(metric, int(model["quality"]))
    if settings.get("attack"):
        settings["attack"] = resolve_attack(settings["attack"])
    optim = settings.get("optim")
    if optim is not None and optim.get("lr") is None:
        # From scratch 1e-4; finetuning pretrained or checkpointed weights 1e-5 (CompressAI / the paper).
        optim["lr"] = 1e-5 if (model.get("pretrained") or model.get("checkpoint")) else 1e-4
    return settings


def resolve_attack(attack: dict) -> dict:
    """`attack=auto` (training default) attacks only once attack.eps is set, with `attack.use`;
    an eps given with attack=none would silently do nothing, so it is an error."""
    attack = dict(attack)
    if attack.get("name") == "auto":
        attack["name"] = attack.pop("use") if attack.get("eps") is not None else "none"
    if attack.get("name") == "none" and attack.get("eps") is not None:
        raise ConfigError(
            f"attack.eps={attack['eps']} is set but attack=none; choose an attack, e.g. attack=chen2023 "
            "(the paper's), attack=pgd, attack=noise (random-noise baseline)"
        )
    return attack


def codec_from_settings(model: dict):
    return build_codec(
        model["arch"],
        int(model["quality"]),
        metric=model["metric"],
        pretrained=bool(model.get("pretrained")),
        checkpoint=model.get("checkpoint"),
        channels=model.get("channels"),
    )


def save_settings(settings: dict, run_dir: Path) -> None:
    """The resolved config beside the results (Hydra's .hydra/ keeps the unresolved one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(settings)))


def write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")
