"""Train or adversarially finetune a learned image codec: `python train.py [overrides]` (Hydra)."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://robust_nic.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from robust_nic.cli import run_job
    from robust_nic.training import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # The overrides go into the "to continue, run: ..." message of an interrupted run.
    overrides = list(hydra_cfg.overrides.task)
    results = run_job(lambda: train(cfg, run_dir, overrides=overrides), run_dir, cfg.get("threads"))
    # The value Hydra sweepers (Optuna) minimise.
    return results.get(cfg.get("optimized_metric") or "", None) if results else None


if __name__ == "__main__":  # guard needed by ddp_spawn
    main()
