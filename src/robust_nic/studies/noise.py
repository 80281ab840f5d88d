"""Noise study: random Gaussian noise against the attack at the same budgets, given in MSE terms.

A budget `mse` means sqrt(MSE(x, x*)) <= eps = sqrt(mse) (attack.norm=rms), i.e. input PSNR >= -10 log10(mse).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from robust_nic.config import ConfigError
from robust_nic.defenses import build_defense
from robust_nic.evaluation.attacked import attack_sources
from robust_nic.evaluation.manifest import write_manifest
from robust_nic.evaluation.metric_keys import run_key
from robust_nic.evaluation.outputs import mean_of, plot_delta_psnr_vs_eps, write_rows_csv
from robust_nic.evaluation.runner import Evaluation, evaluation_attack, measure_images
from robust_nic.evaluation.setup import prepare
from robust_nic.settings import EPS_MAX, check_range
from robust_nic.studies import STUDIES

log = logging.getLogger(__name__)

ROWS = "noise_per_image.csv"  # one row per image and budget: evaluate's row layout plus `mse`
DEFAULT_MSE = (1e-5, 1e-4, 1e-3, 1e-2)
TABLE_METRICS = ("psnr_in", "psnr_out", "delta_psnr", "psnr", "delta_bpp_pct")
EXPLANATION = (
    "Random Gaussian noise and the adversarial attack get exactly the same perturbation energy (MSE between "
    "the source and the perturbed input; eps = sqrt(MSE) on the [0,1] scale; MSE 1e-4 is the paper's "
    "default, 40 dB). delta_psnr (PSNR_in - PSNR_out) tells how many dB the codec amplifies the "
    "perturbation: codecs barely amplify random noise, so the gap between the curves is what the attack's "
    "optimisation adds. Budgets are plotted as eps = sqrt(MSE)."
)


def budget_table(rows: list[dict], kinds: list[str]) -> list[dict]:
    """Mean over images per budget: mse, eps, the input PSNR the budget allows, each kind's metrics."""
    table = []
    for mse in dict.fromkeys(r["mse"] for r in rows):
        subset = [r for r in rows if r["mse"] == mse]
        entry = {"mse": mse, "eps": math.sqrt(mse), "psnr_in_bound": -10 * math.log10(mse)}
        entry |= {f"{kind}/{m}": mean_of(subset, f"{kind}/{m}") for kind in kinds for m in TABLE_METRICS}
        table.append(entry)
    return table


@dataclass(frozen=True)
class NoiseOptions:
    mse: list[float] = field(default_factory=lambda: list(DEFAULT_MSE))  # budgets as MSE; attack.eps is ignored

    def __post_init__(self):
        if not self.mse:
            raise ConfigError("study.mse=[] gives no budget; give one or more MSE budgets, e.g. study.mse=[1e-4]")
        for mse in self.mse:  # eps = sqrt(mse) within attack.norm=rms's budget range
            check_range("study", "mse", mse, 0, EPS_MAX["rms"] ** 2, low_open=True, why=" (an MSE: eps = sqrt(mse))")


@STUDIES.register("noise", options=NoiseOptions)
def run_noise(cfg: DictConfig, run_dir: Path) -> dict:
    """`python evaluate.py study=noise attack=pgd ... [study.mse=[1e-5,1e-4]]`: table, figure, JSONs.

    The images go through the evaluation runner's loop (`measure_images`: per-image seeds, batches,
    resume), with the noise as one more kind of row beside the attack's."""
    inputs = prepare(cfg, run_dir, read_images=False, resume_from=ROWS)
    settings = inputs.settings
    mse_levels = STUDIES.options("noise", inputs.study).mse
    codec = inputs.codec
    coder = build_defense(inputs.defense_cfg, codec).to(inputs.device)
    attack = evaluation_attack(settings)  # one gradient attack with an RMS budget (checks.check_study_attack)
    noise = dataclasses.replace(attack, name="noise")  # same budget, seed and L-inf box
    attacks = {"noise": (noise, codec)} | {
        kind: (attack, source) for kind, source in attack_sources(settings, codec, coder).items()
    }
    budgets = {math.sqrt(mse): {"mse": mse} for mse in mse_levels}  # eps -> its row's mse column
    log.info("noise study: %s on %d images at MSE %s", list(attacks), len(inputs.files), mse_levels)
    evaluation = Evaluation(settings, codec, coder, attacks, list(budgets), inputs.files, run_dir,
                            rows_file=ROWS, budget_columns=budgets)  # fmt: skip
    rows, metrics = measure_images(evaluation, inputs.device, {"training_images": inputs.training_images})
    table = budget_table(rows, list(attacks))

    write_rows_csv(table, run_dir / "noise.csv")
    curve_names = {
        "noise": "random Gaussian noise",
        "adv": f"{attack.name} attack",
        "adaptive": f"{attack.name} attack (adaptive)",
    }
    curves = {curve_names[k]: [(r["eps"], r[f"{k}/delta_psnr"]) for r in table] for k in attacks}
    plot_delta_psnr_vs_eps(curves, run_dir / "noise_vs_attack.png")
    summary = [
        {"mse": r["mse"], "eps": r["eps"]} | {f"{k}/delta_psnr": r[f"{k}/delta_psnr"] for k in attacks}
        for r in table
    ]
    images = int(metrics[run_key("images")])
    title = f"Random noise vs {attack.name} attack at the same budgets ({images} images)"
    write_manifest(
        run_dir,
        "noise",
        title,
        EXPLANATION,
        summary,
        {"noise_vs_attack.png": "delta_psnr against the budget eps = sqrt(MSE): random noise vs the attack."},
        {"noise.csv": "mean over images per budget", ROWS: "per image and budget"},
    )
    log.info("noise study results in %s", run_dir)
    return metrics
