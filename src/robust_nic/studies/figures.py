"""Study figures: quality against recompression generation, transfer heat-maps (matplotlib, files only)."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from robust_nic.evaluation.metric_keys import BY_NAME
from robust_nic.plotting import plt, save_figure

QUALITY_PANELS = tuple((name, BY_NAME[name].axis_label) for name in ("psnr", "ms_ssim", "bpp"))


def plot_quality_vs_generation(means: list[dict], path: Path) -> Path:
    """One panel per quantity (PSNR, MS-SSIM when defined, bpp), one curve per `codec` of the rows."""
    panels = [(k, t) for k, t in QUALITY_PANELS if any(math.isfinite(r.get(k, math.nan)) for r in means)]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (key, title) in zip(axes[0], panels, strict=True):
        for label in dict.fromkeys(r["codec"] for r in means):
            curve = [(r["generation"], r[key]) for r in means if r["codec"] == label]
            axis.plot(
                [g for g, _ in curve],
                [v for _, v in curve],
                marker="." if len(curve) < 60 else None,
                label=label,
            )
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("generation (encode, decode, save PNG, repeat)")
        axis.set_ylabel(title)
        axis.grid(True, alpha=0.3)
    axes[0][0].legend()
    return save_figure(figure, path)


def plot_heatmap(
    matrix, rows: list[str], columns: list[str], title: str, xlabel: str, ylabel: str, path: Path
) -> Path:
    """A labelled matrix of delta_psnr values (dB), each cell annotated."""
    values = [[float(v) for v in row] for row in matrix]
    size = max(len(rows), len(columns))
    figure, axis = plt.subplots(figsize=(2.5 + 0.9 * size, 2 + 0.8 * size))
    image = axis.imshow(values, cmap="magma_r", aspect="auto")
    figure.colorbar(image, ax=axis, label="delta PSNR (dB)")
    axis.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axis.set_yticks(range(len(rows)), rows)
    finite = [v for row in values for v in row if math.isfinite(v)]
    middle = (max(finite) + min(finite)) / 2 if finite else 0.0
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            colour = "white" if value > middle else "black"
            axis.text(j, i, f"{value:.1f}", ha="center", va="center", color=colour, fontsize=9)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    return save_figure(figure, path)
