"""Result files of an evaluation: per-image CSV, flat metrics JSON, CompressAI results JSON, figures."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from robust_nic.evaluation.metric_keys import BY_NAME
from robust_nic.images import write_png
from robust_nic.plotting import plt, save_figure
from robust_nic.rows import column_union


def write_rows_csv(rows: list[dict], path: Path) -> Path:
    """One row per image (and attack setting); columns are the union of all keys, in first-seen order.

    Written to a temporary file, flushed to disk and renamed over `path`: evaluate.py rewrites the file
    after every image, and a run killed at any moment leaves the last complete version."""
    columns = column_union(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return path


def mean_of(rows: list[dict], key: str) -> float:
    """Mean of `key` over the rows that have it; NaN when none has it or when any value is NaN or infinite
    (a broken measurement is never averaged away: callers leave out the rows they mean to leave out)."""
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    if not values or not all(math.isfinite(v) for v in values):
        return float("nan")
    return sum(values) / len(values)


def compressai_results(name: str, description: str, clean: dict[str, float]) -> dict:
    """The JSON layout compressai.utils.plot reads (one rate point per run)."""
    return {
        "name": name,
        "description": description,
        "results": {
            "psnr-rgb": [clean["psnr"]],
            "ms-ssim-rgb": [clean["ms_ssim"]],
            "bpp": [clean["bpp"]],
            "encoding_time": [clean["encode_s"]],
            "decoding_time": [clean["decode_s"]],
        },
    }


def save_attack_images(stem: str, x, x_adv, x_hat, x_hat_adv, out_dir: Path, amplify: float = 10.0) -> Path:
    """Adversarial PNG, amplified perturbation PNG, and a 4-panel comparison figure for one image."""
    write_png(x_adv[0], out_dir / "images" / f"{stem}.png")
    perturbation = (0.5 + amplify * (x_adv[0] - x[0])).clamp(0, 1)
    write_png(perturbation, out_dir / "images" / f"{stem}_perturbation_x{amplify:g}.png")
    panels = [
        (x, "source"),
        (x_adv, "adversarial input"),
        (x_hat, "clean reconstruction"),
        (x_hat_adv, "attacked reconstruction"),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for axis, (image, title) in zip(axes, panels, strict=True):
        axis.imshow(image[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        axis.set_title(title)
        axis.axis("off")
    figure.suptitle(stem)
    return save_figure(figure, out_dir / "figures" / f"{stem}.png", dpi=100)


EPS_AXIS = "attack budget eps (RMS of the perturbation, [0,1] scale)"


def plot_delta_psnr_vs_eps(
    points: dict[str, list[tuple[float, float]]], path: Path, xlabel: str = EPS_AXIS, title: str | None = None
) -> Path:
    """delta_psnr (vulnerability index) against the budget, one curve per label."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, curve in points.items():
        curve = sorted(curve)
        axis.plot([e for e, _ in curve], [d for _, d in curve], marker="o", label=label)
    axis.set_xscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(BY_NAME["delta_psnr"].axis_label)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)
