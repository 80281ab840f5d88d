"""`robust-nic report RUN_DIR... --out DIR`: evaluation and study runs gathered into one page.

A run directory holds config.yaml (the resolved settings) and metrics.json (evaluation) or study.json
(a study). The page is built once as a list of blocks and rendered twice: report.md and report.html.
Figures and study tables are copied under DIR/files/<run>/ so the page links stay relative.
"""

from __future__ import annotations

from robust_nic.evaluation.report.page import write_report
from robust_nic.evaluation.report.runs import find_runs

__all__ = ["find_runs", "write_report"]
