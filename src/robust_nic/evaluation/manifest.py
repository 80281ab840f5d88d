"""study.json: what a study run wrote and how to read it, so a report can present any study."""

from __future__ import annotations

import json
from pathlib import Path

from robust_nic.config import write_json
from robust_nic.rows import column_union

MANIFEST = "study.json"


def write_manifest(
    run_dir: Path,
    study: str,
    title: str,
    explanation: str,
    summary: list[dict],
    figures: dict[str, str],
    tables: dict[str, str],
) -> Path:
    """`summary`: a few rows for the report's table; `figures`/`tables`: file name -> caption."""
    columns = column_union(summary)
    path = run_dir / MANIFEST
    write_json(
        {
            "study": study,
            "title": title,
            "explanation": explanation,
            "summary": summary,
            "summary_columns": columns,  # the JSON keys are sorted; this keeps the intended column order
            "figures": figures,
            "tables": tables,
        },
        path,
    )
    return path


def read_manifest(run_dir: Path) -> dict | None:
    path = Path(run_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
