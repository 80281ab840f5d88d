"""Hydra callback: after a multirun, one summary table (CSV + Markdown) of every job's results."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from robust_nic.evaluation import metric_keys
from robust_nic.evaluation.outputs import plot_delta_psnr_vs_eps, write_rows_csv
from robust_nic.rows import markdown_table
from robust_nic.run_dir import job_dirs

log = logging.getLogger(__name__)

RESULT_FILES = ("metrics.json", "train_metrics.json")


def finished_metrics(path: Path) -> dict | None:
    """A job's results file, or None (with a warning naming it) when it is marked partial: a stopped job's
    numbers cover only the images it finished and never enter a sweep's table."""
    data = json.loads(path.read_text())
    if data.get("partial"):
        log.warning("%s is partial (%s): left out of the sweep's tables; re-run the job to finish it",
                    path, data.get("partial_reason", "stopped"))  # fmt: skip
        return None
    return data


def job_results(job_dir: Path) -> dict | None:
    """A job's overrides and flat final metrics, or None if it left no finished results."""
    for name in RESULT_FILES:
        path = job_dir / name
        if path.is_file():
            data = finished_metrics(path)
            if data is None:
                return None
            metrics = data.get("metrics", data)
            overrides_file = job_dir / ".hydra" / "overrides.yaml"
            overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
            row = {"job": job_dir.name, "overrides": " ".join(overrides)}
            row |= {o.split("=", 1)[0]: o.split("=", 1)[1] for o in overrides if "=" in o}
            return row | {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return None


def summarize_sweep(sweep_dir: Path) -> list[dict]:
    rows = [row for row in map(job_results, job_dirs(sweep_dir)) if row]
    if not rows:
        return rows
    write_rows_csv(rows, sweep_dir / "summary.csv")
    (sweep_dir / "summary.md").write_text(summary_markdown(rows))
    delta = metric_keys.key("adv", "delta_psnr")
    eps_rows = [r for r in rows if "attack.eps" in r and delta in r]
    if len(eps_rows) > 1:
        curve = [(float(r["attack.eps"]), r[delta]) for r in eps_rows]
        plot_delta_psnr_vs_eps({"adv": curve}, sweep_dir / "delta_psnr_vs_eps.png")
    return rows


def summary_markdown(rows: list[dict]) -> str:
    """Overrides plus the headline metrics of each job."""
    return markdown_table(["job", "overrides", *metric_keys.headline_keys(rows[0])], rows, ".4g")


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = summarize_sweep(sweep_dir)
            if rows:
                print(f"\nSweep summary ({len(rows)} runs): {sweep_dir / 'summary.md'}\n" + summary_markdown(rows))
