"""matplotlib for figure files: the one place that picks the backend (Agg: no display on servers).

Every module that draws imports `plt` from here, so the backend is chosen before pyplot loads."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(figure, path: Path, dpi: int = 120) -> Path:
    """Lay out, write (creating the folder) and close a figure; returns its path."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path
