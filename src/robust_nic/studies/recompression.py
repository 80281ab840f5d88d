"""Recompression study: encode, decode, save as 8-bit PNG, re-encode, N generations (paper: 50).

Quality is always measured against the ORIGINAL image, so the curves show how errors accumulate.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from compressai.models import CompressionModel
from omegaconf import DictConfig

from robust_nic.config import write_json
from robust_nic.defenses import Defense, build_defense
from robust_nic.evaluation.manifest import write_manifest
from robust_nic.evaluation.measure import clean_metrics
from robust_nic.evaluation.metric_keys import generation_column
from robust_nic.evaluation.outputs import mean_of, write_rows_csv
from robust_nic.evaluation.setup import EvalInputs, prepare
from robust_nic.images import read_image, write_png
from robust_nic.settings import check_range
from robust_nic.studies import STUDIES, CodecListOptions
from robust_nic.studies.figures import plot_quality_vs_generation

log = logging.getLogger(__name__)

QUANTITIES = ("psnr", "ms_ssim", "bpp", "bpp_est")
EXPLANATION = (
    "Each image is encoded, decoded, saved as an 8-bit PNG, read back and encoded again, generation after "
    "generation (the paper uses 50). PSNR and MS-SSIM are measured against the original image at every "
    "generation, bpp is the real bitstream size of that generation. A codec whose quality keeps falling "
    "is unstable under its own output: small reconstruction errors get amplified at every pass, as an "
    "adversarial perturbation would be."
)


def recompress(
    coder: Defense | CompressionModel,
    x: torch.Tensor,
    generations: int,
    keep_dir: Path | None = None,
    keep: tuple = (),
) -> list[dict]:
    """One row per generation (1..generations) for a single image x (1,3,H,W) in [0,1], coded by a
    defense (`Defense.code`) or a bare codec.

    Generation g codes the PNG written by generation g-1 (the original for g=1); every generation's
    decoded image really goes through write_png/read_image. PNGs of the generations in `keep` are
    kept under keep_dir as gen<g>.png. Deterministic for a fixed image and codec (apart from *_s timings).
    """
    if x.shape[0] != 1:
        raise ValueError(f"recompress takes one image (1,3,H,W), got a batch of {x.shape[0]}")
    if not isinstance(coder, Defense):
        coder = build_defense(None, coder)  # a bare codec
    rows, current = [], x
    with tempfile.TemporaryDirectory() as scratch:
        for generation in range(1, generations + 1):
            coded = coder.code(current)
            metrics = clean_metrics(x, coded)
            rows.append({"generation": generation} | {k: float(v[0]) for k, v in metrics.items()})
            kept = keep_dir is not None and generation in keep
            png = (keep_dir if kept else Path(scratch)) / f"gen{generation:03d}.png"
            current = read_image(write_png(coded.x_hat[0], png))[None].to(x.device)
    return rows


def recompression_coders(inputs: EvalInputs) -> dict[str, Defense]:
    """Every codec as is; the model.* codec also behind `defense` (if any) and, with
    study.with_self_ensemble, behind the self-ensemble."""
    coders = {label: build_defense(None, codec) for label, codec in inputs.codecs.items()}
    main_label, main = inputs.main_label, inputs.codecs[inputs.main_label]
    defense = inputs.defense_cfg
    if defense.get("name", "none") != "none":
        coders[f"{main_label}+{defense['name']}"] = build_defense(defense, main)
    if STUDIES.options("recompression", inputs.study).with_self_ensemble and defense.get("name") != "self_ensemble":
        coders[f"{main_label}+self_ensemble"] = build_defense({"name": "self_ensemble"}, main)
    return coders


def mean_curve(label: str, rows: list[dict], generations: int) -> list[dict]:
    """Per generation, the mean over images of each quantity."""
    curve = []
    for generation in range(1, generations + 1):
        subset = [r for r in rows if r["generation"] == generation]
        curve.append({"codec": label, "generation": generation} | {k: mean_of(subset, k) for k in QUANTITIES})
    return curve


@dataclass(frozen=True)
class RecompressionOptions(CodecListOptions):
    generations: int = 50
    with_self_ensemble: bool = False  # also the model.* codec behind the self-ensemble
    keep_generations: list[int] = field(default_factory=lambda: [1, 10, 50])  # decoded PNGs kept

    def __post_init__(self):
        check_range("study", "generations", self.generations, 1)


@STUDIES.register("recompression", options=RecompressionOptions)
def run_recompression(cfg: DictConfig, run_dir: Path) -> dict:
    """`python evaluate.py study=recompression ...`: CSVs, figure, metrics.json and study.json."""
    inputs = prepare(cfg, run_dir)
    options = STUDIES.options("recompression", inputs.study)
    generations, keep = options.generations, tuple(options.keep_generations)
    per_image, means = [], []
    for label, coder in recompression_coders(inputs).items():
        coder.to(inputs.device)
        rows = []
        for name, x in inputs.images:
            log.info("recompression: %s, %s, %d generations", label, name, generations)
            keep_dir = run_dir / "images" / _safe(label) / Path(name).stem
            rows += [
                {"codec": label, "image": name} | r for r in recompress(coder, x, generations, keep_dir, keep)
            ]
        per_image += rows
        means += mean_curve(label, rows, generations)

    write_rows_csv(per_image, run_dir / "recompression_per_image.csv")
    write_rows_csv(means, run_dir / "recompression.csv")
    plot_quality_vs_generation(means, run_dir / "recompression.png")
    summary = summary_rows(means, generations)
    metrics = {
        f"study/recompression/{row['codec']}/{key}": row[key]
        for row in summary
        for key in row
        if key != "codec"
    }
    write_json(metrics, run_dir / "metrics.json")
    write_manifest(
        run_dir,
        "recompression",
        f"Recompression over {generations} generations",
        EXPLANATION,
        summary,
        {"recompression.png": "Quality against the original and bpp, per generation (mean over images)."},
        {
            "recompression.csv": "mean over images, per codec and generation",
            "recompression_per_image.csv": "per image, codec and generation",
        },
    )
    log.info("recompression results in %s", run_dir)
    return metrics


def summary_rows(means: list[dict], generations: int) -> list[dict]:
    """Per codec: PSNR / MS-SSIM / bpp at generation 1 and at the last generation."""
    rows = []
    for label in dict.fromkeys(r["codec"] for r in means):
        first = next(r for r in means if r["codec"] == label and r["generation"] == 1)
        last = next(r for r in means if r["codec"] == label and r["generation"] == generations)
        rows.append(
            {
                "codec": label,
                generation_column("psnr", 1): first["psnr"],
                generation_column("psnr", generations): last["psnr"],
                "psnr_drop": first["psnr"] - last["psnr"],
                generation_column("ms_ssim", 1): first["ms_ssim"],
                generation_column("ms_ssim", generations): last["ms_ssim"],
                generation_column("bpp", 1): first["bpp"],
                generation_column("bpp", generations): last["bpp"],
            }
        )
    return rows


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label)
