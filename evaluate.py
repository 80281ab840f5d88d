"""Evaluate a codec clean and under attack with the real entropy coder: `python evaluate.py [overrides]`."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://robust_nic.conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from robust_nic.cli import run_job
    from robust_nic.evaluation.runner import evaluate
    from robust_nic.studies import run_study

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    job = (lambda: run_study(cfg, run_dir)) if cfg.get("study", {}).get("name", "none") != "none" else (lambda: evaluate(cfg, run_dir))
    run_job(job, run_dir, cfg.get("threads"))


if __name__ == "__main__":
    main()
