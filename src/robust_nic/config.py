"""Turning a composed Hydra config into resolved plain settings and objects."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import robust_nic.conf  # noqa: F401 - stores the groups' schemas that the YAMLs extend
from robust_nic.codecs import (
    build_codec,
    check_arch,
    check_metric,
    check_quality,
    import_codec_module,
    lambda_for,
    real_channels,
)
from robust_nic.settings import (
    LOSS_METRICS,
    AdversarialSettings,
    ConfigError,
    DataSettings,
    EvalSettings,
    EvaluateRunSettings,
    LossSettings,
    ModelSettings,
    OptimSettings,
    TrainRunSettings,
    group_settings,
    plain,
    split_attack,
    top_level,
    typed,
)

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent / "conf"  # the Hydra configs ship inside the package


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """The config train.py / evaluate.py would see, for scripts and tests that call the jobs directly."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def resolve(cfg: DictConfig) -> dict:
    """Plain, fully resolved settings with derived defaults filled in (lambda, lr); the typed groups
    (robust_nic.settings) checked and written out with every key's value. This dict is the run's record
    (config.yaml, a checkpoint's hyper-parameters); components are handed its typed groups
    (`group_settings`, `run_settings`), never its raw keys."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings |= plain(run_settings(settings))
    loss = typed(LossSettings, "loss", settings["loss"])
    model = typed(ModelSettings, "model", settings["model"])
    metric = LOSS_METRICS[loss.metric]
    settings["loss"] = loss = plain(loss) | {"metric": metric}
    settings["model"] = model = plain(model) | {"metric": model.metric or metric}
    for group, cls in (("data", DataSettings), ("eval", EvalSettings)):
        if group in settings:
            settings[group] = plain(typed(cls, group, settings[group]))
    import_codec_module(model.get("module"))  # a user's module that registers model.arch
    check_arch(model["arch"])
    check_metric(model["metric"])
    check_quality(model["arch"], int(model["quality"]))
    if loss.get("lmbda") is None:
        loss["lmbda"] = lambda_for(metric, int(model["quality"]))
    if settings.get("attack"):
        shared, rest = split_attack(resolve_attack(settings["attack"]))
        settings["attack"] = plain(shared) | rest  # the saved config says every shared key's value
    optim = settings.get("optim")
    if optim is not None and optim.get("lr") is None:
        # From scratch 1e-4; finetuning pretrained or checkpointed weights 1e-5 (CompressAI / the paper).
        optim["lr"] = 1e-5 if (model.get("pretrained") or model.get("checkpoint")) else 1e-4
    if optim is not None:
        settings["optim"] = plain(typed(OptimSettings, "optim", optim))
    if settings.get("train") is not None:
        settings["train"] = plain(typed(AdversarialSettings, "train", settings["train"]))
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


def run_settings(settings: dict) -> TrainRunSettings | EvaluateRunSettings:
    """The top-level keys of train.py's settings (those with its `callbacks` group) or evaluate.py's, typed."""
    return top_level(TrainRunSettings if "callbacks" in settings else EvaluateRunSettings, settings)


def codec_from_settings(settings: dict):
    """The codec of `settings["model"]`. model.channels is then set to the codec's real channel counts, so
    the saved config says what was built (a checkpoint's channels win over the config's)."""
    model: ModelSettings = group_settings(settings, "model")
    codec = build_codec(model.arch, model.quality, metric=model.metric, pretrained=model.pretrained,
                        checkpoint=model.checkpoint, channels=model.channels)  # fmt: skip
    actual = real_channels(codec, model.arch)
    if actual and model.channels and list(model.channels) != actual:
        log.warning(
            "model.channels=%s but %s holds a codec with channels %s; using (and recording) %s",
            model.channels, model.checkpoint or "the weights", actual, actual,
        )
    if actual:
        settings["model"]["channels"] = actual
    return codec



def save_settings(settings: dict, run_dir: Path) -> None:
    """The resolved config beside the results (Hydra's .hydra/ keeps the unresolved one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(settings)))


def write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")
