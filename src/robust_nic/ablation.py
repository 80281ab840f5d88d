"""Attack ablations (Chen & Ma 2023): one table (CSV + Markdown) and one figure per multirun.

`conf/experiment/ablation_*.yaml` sweep one setting (the optimiser, the distance) over equal steps, seeds and
images, or run the noise study over MSE budgets; this Hydra callback then gathers every job's metrics.json,
as the runner measured them through the entropy coder (nothing is recomputed here), into `ablation.csv`,
`ablation.md` and `ablation.png` in the sweep directory.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from robust_nic.evaluation import metric_keys
from robust_nic.evaluation.metric_keys import BY_NAME
from robust_nic.evaluation.outputs import plot_delta_psnr_vs_eps, write_rows_csv
from robust_nic.plotting import plt, save_figure
from robust_nic.rows import markdown_table
from robust_nic.run_dir import job_dirs
from robust_nic.sweep import finished_metrics, job_results

log = logging.getLogger(__name__)

# Each row is one attack (its `attack` column): its quantities under their own names, the clean coding's
# beside them as `clean/<name>` (metric_keys' naming scheme).
ATTACK_METRICS = ("delta_psnr", "psnr", "psnr_in", "ms_ssim", "bpp")
CLEAN_METRICS = ("psnr", "ms_ssim", "bpp")


def job_attack(job_dir: Path) -> dict:
    return yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())["attack"]


def variant_rows(sweep_dir: Path, variant_key: str) -> list[dict]:
    """One row per finished job: the swept value, its steps and eps, and its metrics.json numbers."""
    rows = []
    for job_dir in job_dirs(sweep_dir):
        result = job_results(job_dir)
        if result is None:
            continue
        attack = job_attack(job_dir)
        row = {"variant": result.get(variant_key, ""), "job": job_dir.name, "attack": attack["name"]}
        steps = 0 if attack["name"] == "noise" else attack["steps"]  # noise takes no steps
        row |= {"distance": attack["distance"], "steps": steps, "eps": attack["eps"]}
        row |= {"mse": float(attack["eps"]) ** 2}
        row |= {name: result.get(metric_keys.key("adv", name), math.nan) for name in ATTACK_METRICS}
        row |= clean_columns(result)
        rows.append(row)
    return rows


def clean_columns(metrics: dict) -> dict:
    return {
        metric_keys.column(metric_keys.CLEAN, n): metrics.get(metric_keys.clean_key(n), math.nan)
        for n in CLEAN_METRICS
    }


def budget_rows(sweep_dir: Path) -> list[dict]:
    """One row per kind (noise, attack) and MSE budget of each noise-study job, from its metrics.json."""
    rows = []
    for job_dir in job_dirs(sweep_dir):
        metrics_file = job_dir / "metrics.json"
        metrics = finished_metrics(metrics_file) if metrics_file.is_file() else None
        if metrics is None:
            continue
        attack = job_attack(job_dir)
        study = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())["study"]
        budgets = [math.sqrt(float(m)) for m in study["mse"]]
        for kind in ("noise", "adv", "adaptive"):
            for mse, eps in zip(study["mse"], budgets, strict=True):
                key_eps = metric_keys.budget_eps(eps, budgets)
                if metric_keys.key(kind, "delta_psnr", key_eps) not in metrics:
                    continue
                name = (
                    "noise"
                    if kind == "noise"
                    else attack["name"] + (" (adaptive)" if kind == "adaptive" else "")
                )
                row = {"variant": name, "job": job_dir.name, "attack": name, "distance": attack["distance"]}
                row |= {"steps": 0 if kind == "noise" else attack["steps"], "eps": eps, "mse": float(mse)}
                row |= {n: metrics.get(metric_keys.key(kind, n, key_eps), math.nan) for n in ATTACK_METRICS}
                row |= clean_columns(metrics)
                rows.append(row)
    return rows


def plot_variants(rows: list[dict], title: str, path: Path) -> Path:
    """Bars per variant: delta_psnr, and attacked PSNR (vs the source) beside the clean PSNR."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [str(r["variant"]) for r in rows]
    left.bar(names, [r["delta_psnr"] for r in rows], color="tab:red")
    left.set_ylabel(BY_NAME["delta_psnr"].axis_label)
    right.bar(names, [r["psnr"] for r in rows], color="tab:blue", label="attacked")
    clean_psnr = rows[0][metric_keys.column(metric_keys.CLEAN, "psnr")]
    right.axhline(clean_psnr, color="black", linestyle="--", label="clean")
    right.set_ylabel(BY_NAME["psnr"].axis_label)
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=30)
        axis.grid(True, axis="y", alpha=0.3)
    figure.suptitle(title)
    return save_figure(figure, path)


def plot_budgets(rows: list[dict], title: str, path: Path) -> Path:
    """delta_psnr against the MSE budget, one curve per kind (attack, noise)."""
    curves = {
        name: [(r["mse"], r["delta_psnr"]) for r in rows if r["variant"] == name]
        for name in dict.fromkeys(r["variant"] for r in rows)
    }
    return plot_delta_psnr_vs_eps(curves, path, xlabel="budget: MSE(x, x*) ([0,1] scale; eps = sqrt(MSE))", title=title)


def ablation_markdown(rows: list[dict]) -> str:
    return markdown_table(list(rows[0]), rows, ".4g")


def summarize_ablation(sweep_dir: Path, name: str, variant_key: str | None) -> list[dict]:
    """Write ablation.csv/.md/.png for a finished sweep; `variant_key` None means a noise-study budget sweep."""
    rows = budget_rows(sweep_dir) if variant_key is None else variant_rows(sweep_dir, variant_key)
    if not rows:
        return rows
    write_rows_csv(rows, sweep_dir / "ablation.csv")
    (sweep_dir / "ablation.md").write_text(f"# Attack ablation: {name}\n\n" + ablation_markdown(rows))
    plot = plot_budgets if variant_key is None else plot_variants
    steps = max(r["steps"] for r in rows)
    detail = f"{len({r['job'] for r in rows})} runs, {steps} attack steps"
    plot(rows, f"{name} ablation ({detail})", sweep_dir / "ablation.png")
    log.info("%s ablation: %s", name, sweep_dir / "ablation.md")
    return rows


class AblationSummary(Callback):
    """Added to `hydra.callbacks` by the ablation experiment configs; runs after the sweep's summary."""

    def __init__(self, name: str, variant_key: str | None = None) -> None:
        self.name, self.variant_key = name, variant_key

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        log.warning("experiment=ablation_%s ran one job and no ablation table: add -m to sweep it", self.name)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and (rows := summarize_ablation(sweep_dir, self.name, self.variant_key)):
            print(f"\nAblation '{self.name}' ({len(rows)} rows): {sweep_dir / 'ablation.md'}\n")
            print(ablation_markdown(rows))
