"""The training job behind train.py: compose data, codec, module, logger and Trainer, then fit."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from robust_nic.attacks import build_attack, with_defaults
from robust_nic.attacks.factory import SHARED_KEYS
from robust_nic.attacks.factory import variant as attack_variant
from robust_nic.attacks.optimizers import knobs
from robust_nic.checkpoints import LAST, StopRequested
from robust_nic.checks import check_training
from robust_nic.coding_device import set_coding_device
from robust_nic.config import (
    ConfigError,
    codec_from_settings,
    resolve,
    run_settings,
    save_settings,
    write_json,
)
from robust_nic.data import ImageDataModule, check_training_source
from robust_nic.module import CodecModule, training_settings
from robust_nic.resume import ResumePoint, TrainingStopped, resume_command, resume_point
from robust_nic.run_dir import check_writable
from robust_nic.settings import TrainRunSettings, group_settings
from robust_nic.trackers import build_logger, logger_dir, record_attempt_start

log = logging.getLogger(__name__)

# Resuming is deliberate here (a run directory's checkpoints are always resumed from, see resume.py), and
# training batches are random crops (continuing mid-epoch only changes which come next): these warnings are noise.
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


def build_callbacks(cfg: Mapping, run_dir: Path, monitor: str, overrides, progress_bar: bool) -> list:
    """The `callbacks` group, each instantiated with its run-time arguments (the progress bar only when
    trainer.enable_progress_bar: Lightning refuses one otherwise)."""
    runtime = {
        "model_checkpoint": {"dirpath": run_dir / "checkpoints", "monitor": monitor},
        "last_checkpoint": {"dirpath": run_dir / "checkpoints"},
        "save_on_interrupt": {"run_dir": run_dir, "overrides": overrides},
    }
    callbacks = []
    for name, callback in (cfg or {}).items():
        if not callback or (name == "progress_bar" and not progress_bar):
            continue
        callbacks.append(instantiate(dict(callback), **runtime.get(name, {})))
    return callbacks


def build_trainer(settings: dict, run_dir: Path, logger, monitor: str, extra_callbacks=(), overrides=None) -> L.Trainer:
    """The `trainer` group's Lightning Trainer (hydra.utils.instantiate) with the run's logger and callbacks."""
    trainer_cfg = dict(settings["trainer"])
    callbacks = build_callbacks(settings.get("callbacks"), run_dir, monitor, overrides,
                                bool(trainer_cfg.get("enable_progress_bar", True)))  # fmt: skip
    return instantiate(trainer_cfg, default_root_dir=str(run_dir), logger=logger,
                       callbacks=[*callbacks, *extra_callbacks])  # fmt: skip


def train(cfg: DictConfig, run_dir: Path, extra_callbacks=(), overrides: list[str] | None = None) -> dict:
    """Fit a codec as configured; returns the final logged metrics. Writes everything under run_dir.

    Re-running in the same run_dir continues from its checkpoint with the most training. `overrides`
    (train.py's command-line overrides) go into the message that says how to continue an interrupted run."""
    settings = checked_settings(cfg)
    run: TrainRunSettings = run_settings(settings)
    set_coding_device(run.coding.device)
    # Before any work: the outputs can be written, and where training continues from.
    run_dir = Path(run_dir)
    start = resume_point(run.ckpt_path, run_dir / "checkpoints")
    check_writable(run_dir, run_dir / "checkpoints", *filter(None, [logger_dir(settings["logger"], run_dir)]))
    max_batches = int(settings["trainer"]["max_steps"])
    if start is not None:
        start.check_resumable()
    if start is not None and start.batches >= max_batches:
        return already_trained(run_dir, start, max_batches)
    if start is not None:
        log.info("resuming from %s at batch %d", start.path, start.batches)
    L.seed_everything(run.seed, workers=True, verbose=False)
    attack, val_attack = training_attacks(settings)
    codec = codec_from_settings(settings)
    module = CodecModule.from_settings(codec, settings, attack=attack, val_attack=val_attack)
    datamodule = ImageDataModule(group_settings(settings, "data"), first_batch=start.batches if start else 0,
                                 seed=run.seed)  # fmt: skip
    monitor = "val/adv/delta_psnr" if attack is not None else "val/rd_loss"
    logger = build_logger(settings["logger"], run_dir, run_config=settings)
    trainer = build_trainer(settings, run_dir, logger, monitor, extra_callbacks, overrides)
    if trainer.is_global_zero:
        save_settings(settings, run_dir)
    # weights_only: a checkpoint is data, never code (our checkpoints hold plain containers only).
    if trainer.is_global_zero:
        record_attempt_start(logger, start.batches if start else 0)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(start.path) if start else None, weights_only=True)
    except StopRequested as stop:
        raise TrainingStopped(stop.signal_name, run_dir / "checkpoints" / LAST, module.global_step,
                              resume_command(run_dir, overrides)) from None  # fmt: skip
    results = {k: float(v) for k, v in trainer.callback_metrics.items()}
    results["steps"] = module.global_step  # batches: one Lightning step per batch
    callback = trainer.checkpoint_callback
    results_file = {
        "metrics": results,
        "best_checkpoint": str(callback.best_model_path) if callback else None,
        "last_checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
    }
    if trainer.is_global_zero:
        write_json(results_file, run_dir / "train_metrics.json")
    return results


def training_attacks(settings: dict) -> tuple:
    """The training attack and the validation attack (train.val_attack's overrides of it); (None, None)
    without an attack. Validation always keeps each image's strongest iterate, whatever training returns."""
    attack = build_attack(settings.get("attack"))
    if attack is None:
        return None, None
    overrides = {k: v for k, v in group_settings(settings, "train").val_attack.items() if v is not None}
    unknown = sorted(set(overrides) - set(SHARED_KEYS) - knobs())
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(f'train.val_attack.{k}' for k in unknown)}; "
                          "train.val_attack takes attack.* keys (e.g. name, steps, proxy, random_start)")  # fmt: skip
    try:
        return attack, build_attack(attack_variant(settings["attack"], {"select": "best"} | overrides))
    except ConfigError as err:
        raise ConfigError(f"train.val_attack: {err}") from err


def checked_settings(cfg: DictConfig) -> dict:
    """The resolved training settings, every rule checked: a mistake stops here, before any work."""
    settings = resolve(cfg)
    settings["attack"] = with_defaults(settings.get("attack"))
    check_training(settings)
    training_settings(settings)  # the optim and train groups, typed and checked
    training_attacks(settings)  # both attacks as they will be built
    check_precision(settings["trainer"])
    check_training_source(group_settings(settings, "data"))
    return settings


def check_precision(trainer_cfg: dict) -> None:
    """fp16 mixed precision scales the loss with a GradScaler, which the aux optimizer (stepped outside
    Lightning, see CodecModule) would not undo."""
    precision = str(trainer_cfg.get("precision", "32-true"))
    if precision.startswith("16"):
        raise ConfigError(
            f"trainer.precision={precision} is not supported (its loss scaling would reach the aux optimizer "
            "unscaled); use 32-true or bf16-mixed"
        )


def already_trained(run_dir: Path, start: ResumePoint, max_batches: int) -> dict:
    """A finished run re-run as is: say so (not a silent no-op) and return its recorded results."""
    relation = "=" if start.batches == max_batches else ">"
    log.warning(
        "%s: already trained %d batches %s trainer.max_steps (%d; checkpoint %s); raise trainer.max_steps to continue",
        run_dir, start.batches, relation, max_batches, start.path,
    )
    recorded = run_dir / "train_metrics.json"
    results = json.loads(recorded.read_text()).get("metrics", {}) if recorded.is_file() else {}
    return results | {"steps": start.batches}
