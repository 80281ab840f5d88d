"""Architectures study: train small codecs of several architectures alike, then attack each alike.

    python evaluate.py experiment=architectures           # factorized ... ELIC, worst_case at eps 0.01
    python evaluate.py experiment=architectures_scaling   # one hyperprior, longer training and wider

Each variant (`study.variants`: label -> train.py overrides) is trained in `RUN_DIR/<label>/train` with the
overrides every variant shares (`study.train`: data, batch, steps, lambda), then evaluated in
`RUN_DIR/<label>/eval` by the same evaluation as `python evaluate.py model.checkpoint=...` with this run's
attack, data and images (clean and attacked through the real entropy coder). A re-run in the same run
directory continues unfinished training and reuses finished evaluations. The table (architectures.csv, .md),
the figure (architectures.png) and metrics.json compare the variants.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robust_nic.config import ConfigError, compose_config, write_json
from robust_nic.evaluation import metric_keys
from robust_nic.evaluation.manifest import write_manifest
from robust_nic.evaluation.metric_keys import BY_NAME
from robust_nic.evaluation.outputs import write_rows_csv
from robust_nic.plotting import plt, save_figure
from robust_nic.rows import markdown_table
from robust_nic.studies import STUDIES

log = logging.getLogger(__name__)

EXPLANATION = (
    "Each codec was trained from scratch with the same data, batch, steps and lambda, then coded clean and "
    "attacked at the same budget on the held-out photos (means over images). clean/psnr: clean reconstruction "
    "vs source; adv/delta_psnr: PSNR(x, x_adv) - PSNR(x_hat, x_hat_adv), how much the codec amplifies the "
    "perturbation; adv/psnr: attacked reconstruction vs the clean source (the damage a viewer sees); "
    "source_damage_db: clean/psnr - adv/psnr; adv/delta_bpp_pct: rate of the attacked bitstream vs the clean one."
)

# (kind, metric) of the evaluation's metrics.json, each a `<kind>/<metric>` column (metric_keys' scheme).
COLUMNS = (("clean", "bpp"), ("clean", "psnr"), ("adv", "psnr_in"), ("adv", "delta_psnr"), ("adv", "psnr"),
           ("adv", "bpp"), ("adv", "delta_bpp_pct"))  # fmt: skip
CLEAN_PSNR, ADV_PSNR = metric_keys.column("clean", "psnr"), metric_keys.column("adv", "psnr")


@dataclass(frozen=True)
class ArchitecturesOptions:
    variants: dict = field(default_factory=dict)  # label -> train.py overrides (model=..., model.channels=...)
    train: list[str] = field(default_factory=list)  # train.py overrides every variant shares


def variant_overrides(options: ArchitecturesOptions) -> dict[str, list[str]]:
    variants = {str(k): [str(o) for o in v] for k, v in dict(options.variants or {}).items()}
    if not variants:
        raise ConfigError("study=architectures needs study.variants: label -> train.py overrides")
    for label, overrides in variants.items():
        if "/" in label or not label:
            raise ConfigError(f"study.variants label {label!r} must be a plain name (it becomes a folder)")
        if any(o.split("=")[0] in ("model.checkpoint", "model.pretrained") for o in overrides):
            raise ConfigError(f"study.variants.{label}: every variant is trained from scratch here")
    return variants


def train_config(options: ArchitecturesOptions, overrides: list[str]) -> DictConfig:
    """What `python train.py OVERRIDES` composes (from inside evaluate.py's Hydra job too)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    overrides = [*options.train, *overrides, "model.pretrained=false", "logger=csv"]
    if GlobalHydra.instance().is_initialized():  # evaluate.py: the same config package is already searched
        return compose(config_name="train", overrides=overrides)
    return compose_config("train", overrides)


def evaluation_config(cfg: DictConfig, trained: DictConfig, checkpoint: Path) -> DictConfig:
    """This run's settings (attack, data, images) with the trained codec as model.* and no study."""
    evaluation = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(evaluation, False)
    evaluation.model = OmegaConf.create(OmegaConf.to_container(trained.model, resolve=True))
    evaluation.model.checkpoint = str(checkpoint)
    evaluation.loss = trained.loss
    evaluation.study = {"name": "none"}
    evaluation.pop("hydra", None)
    return evaluation


def variant_row(label: str, trained: DictConfig, metrics: dict) -> dict:
    model = trained.model
    row = {"variant": label, "arch": model.arch, "channels": list(model.channels or []),
           "train_steps": int(trained.trainer.max_steps), "quality": int(model.quality)}  # fmt: skip
    for kind, name in COLUMNS:
        row[metric_keys.column(kind, name)] = float(metrics.get(metric_keys.key(kind, name), math.nan))
    row["source_damage_db"] = row[CLEAN_PSNR] - row[ADV_PSNR]
    return row


def plot_architectures(rows: list[dict], title: str, path: Path) -> Path:
    labels = [r["variant"] for r in rows]
    panels = [
        (CLEAN_PSNR, ADV_PSNR, f"{BY_NAME['psnr'].label}: clean | attacked"),
        ("adv/delta_psnr", None, BY_NAME["delta_psnr"].axis_label),
        ("clean/bpp", "adv/bpp", f"{BY_NAME['bpp'].label}: clean | attacked"),
        ("adv/delta_bpp_pct", None, BY_NAME["delta_bpp_pct"].label),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    positions = range(len(rows))
    for ax, (first, second, name) in zip(axes, panels, strict=True):
        width = 0.4 if second else 0.7
        ax.bar([p - (width / 2 if second else 0) for p in positions], [r[first] for r in rows], width, label=first)
        if second:
            ax.bar([p + width / 2 for p in positions], [r[second] for r in rows], width, label=second)
            ax.legend(fontsize=7)
        ax.set_xticks(list(positions), labels, rotation=35, ha="right", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)


TABLE_COLUMNS = ["variant", "arch", "channels", "train_steps", "clean/bpp", CLEAN_PSNR, "adv/delta_psnr", ADV_PSNR,
                 "source_damage_db", "adv/delta_bpp_pct"]  # fmt: skip


@STUDIES.register("architectures", options=ArchitecturesOptions)
def run_architectures(cfg: DictConfig, run_dir: Path) -> dict:
    from robust_nic.evaluation.runner import evaluate
    from robust_nic.training import train

    options = STUDIES.options("architectures", OmegaConf.to_container(cfg.study, resolve=True))
    variants = variant_overrides(options)
    configs = {label: train_config(options, overrides) for label, overrides in variants.items()}  # all fail early
    rows, metrics = [], {}
    for label, trained in configs.items():
        train_dir, eval_dir = run_dir / label / "train", run_dir / label / "eval"
        log.info("architectures: training %s (%s)", label, " ".join(variants[label]))
        train(trained, train_dir)
        evaluation = evaluation_config(cfg, trained, train_dir / "checkpoints" / "last.ckpt")
        log.info("architectures: evaluating %s", label)
        result = evaluate(evaluation, eval_dir)  # a re-run continues it (or refuses other settings there)
        saved = OmegaConf.load(train_dir / "config.yaml")  # the channels really built
        rows.append(variant_row(label, saved, result))
        metrics |= {f"study/architectures/{label}/{k}": v for k, v in rows[-1].items() if isinstance(v, float)}
        write_rows_csv(rows, run_dir / "architectures.csv")  # after every variant: a killed run keeps them
    attack = cfg.attack
    title = f"{attack.name} at eps {attack.eps}, {len(rows)} codecs"
    (run_dir / "architectures.md").write_text(markdown_table(TABLE_COLUMNS, rows, ".3f"))
    plot_architectures(rows, title, run_dir / "architectures.png")
    write_json(metrics, run_dir / "metrics.json")
    figures = {"architectures.png": "Per codec: PSNR vs source clean and attacked, delta_psnr, bpp, bpp change."}
    tables = {"architectures.csv": "per codec: clean and attacked rate and quality (means over images)"}
    write_manifest(run_dir, "architectures", f"Architectures under {title}", EXPLANATION, rows, figures, tables)
    return metrics
