"""Transfer study: does a perturbation crafted for one image (or one codec) hurt another?

Cross-image: the perturbation crafted on image i is added to image j (cropped, or tiled, or resized to
j's size), projected onto the attack's budget on image j, rounded to 8 bits (still within budget) and coded: delta_psnr matrix, rows = source image i, columns =
target image j; the diagonal is the normal attack. Cross-codec: adversarial examples crafted on codec A
are coded by codec B: matrix of mean delta_psnr, rows = A, columns = B.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from robust_nic.attacks.budget import Budget
from robust_nic.coding import Coded
from robust_nic.config import ConfigError, write_json
from robust_nic.defenses import Defense, build_defense
from robust_nic.evaluation import metric_keys
from robust_nic.evaluation.manifest import write_manifest
from robust_nic.evaluation.measure import adversarial_metrics
from robust_nic.evaluation.outputs import mean_of, write_rows_csv
from robust_nic.evaluation.resume import seeded_for
from robust_nic.evaluation.setup import prepare, required_attack, single_eps
from robust_nic.studies import STUDIES, CodecListOptions
from robust_nic.studies.figures import plot_heatmap

log = logging.getLogger(__name__)

FITS = ("crop", "resize")
EXPLANATION = (
    "delta_psnr = PSNR(source, attacked input) - PSNR(clean reconstruction, attacked reconstruction): "
    "how many dB the codec amplifies the perturbation. Cross-image: the perturbation crafted for the row's "
    "image is added to the column's image (centre-cropped, or tiled when smaller; `study.fit=resize` "
    "resizes it); a high off-diagonal value means the perturbation is universal, not image-specific. "
    "Cross-codec: adversarial images crafted on the row's codec are coded by the column's codec; a high "
    "off-diagonal value means an attacker needs no access to the codec that is actually deployed."
)


def fit_perturbation(delta: torch.Tensor, size: tuple[int, int], fit: str = "crop") -> torch.Tensor:
    """delta (N,3,h,w) made (N,3,H,W): `crop` tiles it when smaller and takes the centre; `resize` is bilinear."""
    if fit not in FITS:
        raise ConfigError(f"unknown study.fit {fit!r}; choose one of {list(FITS)}")
    height, width = size
    if tuple(delta.shape[-2:]) == (height, width):
        return delta
    if fit == "resize":
        return F.interpolate(delta, size=(height, width), mode="bilinear", align_corners=False)
    tiled = delta.repeat(1, 1, math.ceil(height / delta.shape[-2]), math.ceil(width / delta.shape[-1]))
    top, left = (tiled.shape[-2] - height) // 2, (tiled.shape[-1] - width) // 2
    return tiled[..., top : top + height, left : left + width]


def apply_perturbation(x: torch.Tensor, delta: torch.Tensor, budget: Budget, fit: str = "crop") -> torch.Tensor:
    """x plus the fitted perturbation, inside `budget` on x and rounded to 8 bits (a real image).

    Cropping, tiling or resizing changes a perturbation's norm (tiling a small image's perturbation onto
    a large image with another clipping pattern can exceed the rms budget by 2 dB), so the transferred
    perturbation goes through the attack's own projection and budget-safe rounding.
    """
    return budget.round(x, x + fit_perturbation(delta, tuple(x.shape[-2:]), fit))


def craft(attack, codec: torch.nn.Module, images: list[tuple[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Adversarial example of every image, crafted on `codec` with the image's own draws (as evaluate.py)."""
    return [seeded_for(attack, name)(codec, x) for name, x in images]


def cross_image(
    images: list[tuple[str, torch.Tensor]],
    adversarial: list[torch.Tensor],
    coder: Defense,
    clean: list[Coded],
    budget: Budget,
    fit: str = "crop",
) -> tuple[torch.Tensor, list[dict]]:
    """delta_psnr matrix (source image i x target image j) and one row of metrics per pair."""
    count = len(images)
    matrix = torch.full((count, count), math.nan, dtype=torch.float64)
    rows = []
    for i, ((source, x_i), x_adv) in enumerate(zip(images, adversarial, strict=True)):
        delta = x_adv - x_i
        for j, (target, x_j) in enumerate(images):
            x_ij = apply_perturbation(x_j, delta, budget, fit)
            metrics = adversarial_metrics(x_j, x_ij, clean[j], coder.code(x_ij))
            matrix[i, j] = float(metrics["delta_psnr"][0])
            rows.append({"source": source, "target": target} | _floats(metrics))
    return matrix, rows


def cross_codec(
    images: list[tuple[str, torch.Tensor]],
    adversarial: dict[str, list[torch.Tensor]],
    coders: dict[str, Defense],
    clean: dict[str, list[Coded]],
) -> tuple[torch.Tensor, list[dict]]:
    """Mean delta_psnr matrix (crafted on codec A x coded by codec B) and one row per image and pair."""
    matrix = torch.full((len(adversarial), len(coders)), math.nan, dtype=torch.float64)
    rows = []
    for a, (crafted_on, examples) in enumerate(adversarial.items()):
        for b, (coded_by, coder) in enumerate(coders.items()):
            pair = []
            for (name, x), x_adv, reference in zip(images, examples, clean[coded_by], strict=True):
                metrics = adversarial_metrics(x, x_adv, reference, coder.code(x_adv))
                pair.append(
                    {"crafted_on": crafted_on, "coded_by": coded_by, "image": name} | _floats(metrics)
                )
            matrix[a, b] = mean_of(pair, "delta_psnr")
            rows += pair
    return matrix, rows


def matrix_rows(matrix: torch.Tensor, rows: list[str], columns: list[str], corner: str) -> list[dict]:
    """A matrix as CSV rows: the first column names the row, then one column per column label."""
    return [{corner: r} | {c: float(matrix[i, j]) for j, c in enumerate(columns)} for i, r in enumerate(rows)]


@dataclass(frozen=True)
class TransferOptions(CodecListOptions):
    cross_image: bool = True  # the N_images x N_images matrix; false: cross-codec only
    fit: str = "crop"  # perturbation to another image's size: crop | resize

    def __post_init__(self):
        if self.fit not in ("crop", "resize"):
            raise ConfigError(f"study.fit={self.fit} is unknown; choose crop | resize")


@STUDIES.register("transfer", options=TransferOptions)
def run_transfer(cfg: DictConfig, run_dir: Path) -> dict:
    """`python evaluate.py study=transfer attack=pgd ... [study.codecs=[A,B]]`: CSVs, heat-maps, JSONs."""
    inputs = prepare(cfg, run_dir)
    settings, options = inputs.settings, STUDIES.options("transfer", inputs.study)
    attack = required_attack(settings)
    attack = attack.with_eps(single_eps(settings))
    fit = options.fit
    coders = {
        label: build_defense(inputs.defense_cfg, codec).to(inputs.device)
        for label, codec in inputs.codecs.items()
    }
    names = [name for name, _ in inputs.images]
    labels = list(inputs.codecs)
    log.info("transfer: crafting %s on %d images x %d codecs", attack.name, len(names), len(labels))
    adversarial = {label: craft(attack, codec, inputs.images) for label, codec in inputs.codecs.items()}
    clean = {label: [coder.code(x) for _, x in inputs.images] for label, coder in coders.items()}
    main = inputs.main_label
    metrics, figures, tables, summary = {}, {}, {}, []

    if options.cross_image:
        matrix, rows = cross_image(inputs.images, adversarial[main], coders[main], clean[main], attack.budget, fit)
        write_rows_csv(rows, run_dir / "transfer_images.csv")
        write_rows_csv(
            matrix_rows(matrix, names, names, "source \\ target"), run_dir / "transfer_images_delta_psnr.csv"
        )
        plot_heatmap(
            matrix,
            names,
            names,
            f"cross-image transfer on {main}",
            "perturbation added to (target)",
            "perturbation crafted on (source)",
            run_dir / "transfer_images.png",
        )
        diagonal, off = _diagonal_split(matrix)
        metrics |= {metric_keys.TRANSFER_DIAGONAL: diagonal, metric_keys.TRANSFER_OFF_DIAGONAL: off}
        summary.append({"transfer": f"image -> same image ({main})", "delta_psnr": diagonal})
        summary.append({"transfer": f"image -> other images ({main})", "delta_psnr": off})
        figures["transfer_images.png"] = (
            "Cross-image delta_psnr (dB): perturbation of the row's image added to the column's image."
        )
        tables |= {
            "transfer_images_delta_psnr.csv": "cross-image delta_psnr matrix",
            "transfer_images.csv": "every pair, all metrics",
        }

    matrix, rows = cross_codec(inputs.images, adversarial, coders, clean)
    write_rows_csv(rows, run_dir / "transfer_codecs.csv")
    write_rows_csv(
        matrix_rows(matrix, labels, labels, "crafted on \\ coded by"),
        run_dir / "transfer_codecs_delta_psnr.csv",
    )
    plot_heatmap(
        matrix,
        labels,
        labels,
        "cross-codec transfer (mean over images)",
        "coded by",
        "crafted on",
        run_dir / "transfer_codecs.png",
    )
    for a, crafted_on in enumerate(labels):
        for b, coded_by in enumerate(labels):
            metrics[metric_keys.transfer_pair_key(crafted_on, coded_by)] = float(matrix[a, b])
            summary.append(
                {
                    "transfer": f"crafted on {crafted_on}, coded by {coded_by}",
                    "delta_psnr": float(matrix[a, b]),
                }
            )
    figures["transfer_codecs.png"] = (
        "Cross-codec delta_psnr (dB): adversarial images crafted on the row's codec, coded by the column's."
    )
    tables |= {
        "transfer_codecs_delta_psnr.csv": "cross-codec mean delta_psnr matrix",
        "transfer_codecs.csv": "every image and codec pair",
    }

    metrics["study/transfer/eps"] = float(attack.eps)
    metrics["study/images"] = float(len(names))
    write_json(metrics, run_dir / "metrics.json")
    title = f"Transfer of {attack.name} attacks (eps={float(attack.eps):g}, {len(names)} images, {len(labels)} codecs)"
    write_manifest(run_dir, "transfer", title, EXPLANATION, summary, figures, tables)
    log.info("transfer results in %s", run_dir)
    return metrics


def _diagonal_split(matrix: torch.Tensor) -> tuple[float, float]:
    eye = torch.eye(matrix.shape[0], dtype=torch.bool)
    off = matrix[~eye]
    return float(matrix[eye].mean()), float(off.mean()) if off.numel() else math.nan


def _floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v[0]) for k, v in metrics.items()}
