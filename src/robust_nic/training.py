"""The training job behind train.py: compose data, codec, module, logger and Trainer, then fit."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint, TQDMProgressBar
from omegaconf import DictConfig

from robust_nic.attacks import build_attack
from robust_nic.config import codec_from_settings, resolve, save_settings, write_json
from robust_nic.data import ImageDataModule
from robust_nic.module import CodecModule
from robust_nic.trackers import build_logger

log = logging.getLogger(__name__)

# With OnExceptionCheckpoint, Lightning resumes from checkpoints/last.ckpt when it exists (re-running in
# the same hydra.run.dir continues an interrupted run) and warns when it does not: expected, not news.
warnings.filterwarnings("ignore", message=r".*was called without a model.*")
warnings.filterwarnings("ignore", message=r".*there is no last checkpoint available.*")


class BatchProgressBar(TQDMProgressBar):
    """Counts batches: with two optimizers Lightning's max_steps is twice the batches."""

    @property
    def total_train_batches(self):
        total = super().total_train_batches
        return min(total, self.trainer.max_steps // 2) if self.trainer.max_steps > 0 else total


def build_trainer(settings: dict, run_dir: Path, logger, monitor: str, extra_callbacks=()) -> L.Trainer:
    trainer_cfg = settings["trainer"]
    checkpoints = run_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="best-{step}",
            monitor=monitor,
            mode="min",
            save_last=True,
            save_top_k=1,
            auto_insert_metric_name=False,
        ),
        # An interrupted run (Ctrl-C, crash) still leaves a checkpoint to resume from.
        OnExceptionCheckpoint(dirpath=checkpoints, filename="interrupted"),
        *extra_callbacks,
    ]
    if trainer_cfg.get("progress_bar", True):
        callbacks.append(BatchProgressBar(refresh_rate=10))
    return L.Trainer(
        accelerator=trainer_cfg.get("accelerator", "auto"),
        devices=trainer_cfg.get("devices", "auto"),
        strategy=trainer_cfg.get("strategy", "auto"),
        num_nodes=trainer_cfg.get("num_nodes", 1),
        precision=trainer_cfg.get("precision", "32-true"),
        # Lightning counts one step per optimizer; max_steps in our config counts batches.
        max_steps=2 * int(trainer_cfg["max_steps"]),
        val_check_interval=int(trainer_cfg["val_check_interval"]),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=trainer_cfg.get("num_sanity_val_steps", 0),
        limit_val_batches=trainer_cfg.get("limit_val_batches"),
        log_every_n_steps=int(trainer_cfg.get("log_every_n_steps", 10)),
        enable_progress_bar=bool(trainer_cfg.get("progress_bar", True)),
        deterministic=trainer_cfg.get("deterministic", False),
        inference_mode=False,  # validation attacks need gradients
        default_root_dir=str(run_dir),
        logger=logger,
        callbacks=callbacks,
    )


def train(cfg: DictConfig, run_dir: Path, extra_callbacks=()) -> dict:
    """Fit a codec as configured; returns the final logged metrics. Writes everything under run_dir."""
    settings = resolve(cfg)
    L.seed_everything(int(settings.get("seed", 0)), workers=True, verbose=False)
    attack = build_attack(settings.get("attack"))
    val_overrides = {k: v for k, v in ((settings.get("train") or {}).get("val_attack") or {}).items() if v is not None}
    val_attack = build_attack({**settings["attack"], **val_overrides}) if attack and val_overrides else None
    codec = codec_from_settings(settings["model"])
    module = CodecModule(codec, settings, attack=attack, val_attack=val_attack)
    datamodule = ImageDataModule(settings["data"])
    monitor = "val/adv/delta_psnr" if attack is not None else "val/rd_loss"
    logger = build_logger(settings["logger"], run_dir, run_config=settings)
    trainer = build_trainer(settings, run_dir, logger, monitor, extra_callbacks)
    if trainer.is_global_zero:
        save_settings(settings, run_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=settings.get("ckpt_path"))
    results = {k: float(v) for k, v in trainer.callback_metrics.items()}
    results["steps"] = module.batch_step
    callback = trainer.checkpoint_callback
    results_file = {
        "metrics": results,
        "best_checkpoint": str(callback.best_model_path) if callback else None,
        "last_checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
    }
    if trainer.is_global_zero:
        write_json(results_file, run_dir / "train_metrics.json")
    return results
