"""Train or adversarially finetune a learned image codec: `python train.py [overrides]` (Hydra)."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from robust_nic.cli import run_job
    from robust_nic.training import train

    results = run_job(lambda: train(cfg, Path(HydraConfig.get().runtime.output_dir)))
    # The value Hydra sweepers (Optuna) minimise.
    return results.get(cfg.get("optimized_metric") or "", None) if results else None


if __name__ == "__main__":  # guard needed by ddp_spawn
    main()
