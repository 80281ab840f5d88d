"""matplotlib for figure files: the one place that picks the backend (Agg: no display on servers).

Every module that draws imports `plt` from here, so the backend is chosen before pyplot loads."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt"]
