"""The run directories a report gathers: their settings, metrics, and which runs match."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from robust_nic.studies.labels import model_label
from robust_nic.studies.manifest import read_manifest


@dataclass
class Run:
    path: Path
    name: str
    settings: dict
    metrics: dict
    manifest: dict | None

    @property
    def is_study(self) -> bool:
        return self.manifest is not None

    @property
    def is_evaluation(self) -> bool:
        return self.manifest is None and "test/clean/psnr" in self.metrics

    @property
    def model(self) -> dict:
        return self.settings.get("model") or {}

    @property
    def codec(self) -> str:
        return model_label(self.model)

    @property
    def defense(self) -> str:
        defense = dict(self.settings.get("defense") or {"name": "none"})
        name = defense.pop("name", "none")
        knobs = ", ".join(f"{k}={v}" for k, v in defense.items() if v is not None)
        return f"{name} ({knobs})" if knobs and name != "none" else name

    @property
    def defended(self) -> bool:
        return (self.settings.get("defense") or {}).get("name", "none") != "none"


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Run directories given directly or found below the given folders (sorted, each once)."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass evaluation or study run directories")
        candidates = [path / "config.yaml"] + sorted(path.rglob("config.yaml"))
        for config in candidates:
            run = config.parent
            if config.is_file() and ".hydra" not in run.parts and _has_results(run):
                found[run.resolve()] = None
    if not found:
        raise FileNotFoundError(
            f"no run directories (config.yaml with metrics.json or study.json) in {[str(p) for p in paths]}"
        )
    names = run_names(list(found))
    return [_load(path, name) for path, name in zip(found, names, strict=True)]


def _has_results(run: Path) -> bool:
    return (run / "metrics.json").is_file() or (run / "study.json").is_file()


def run_names(paths: list[Path]) -> list[str]:
    """Short unique names: each path relative to the deepest folder common to all runs."""
    if len(paths) == 1:
        return [paths[0].name]
    common = Path(os.path.commonpath(paths))
    return [str(p.relative_to(common)) or p.name for p in paths]


def _load(path: Path, name: str) -> Run:
    settings = yaml.safe_load((path / "config.yaml").read_text()) or {}
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return Run(path, name, settings, metrics, read_manifest(path))


def codec_key(run: Run) -> tuple:
    model = run.model
    source = (
        str(Path(model["checkpoint"]).resolve()) if model.get("checkpoint") else bool(model.get("pretrained"))
    )
    return (model.get("arch"), model.get("quality"), model.get("metric"), source)


def data_key(run: Run) -> tuple:
    data = run.settings.get("data") or {}
    photos = tuple(data.get("heldout_photos") or ())
    return (data.get("name"), data.get("root"), data.get("test_root"), photos, run.settings.get("max_images"))


def baseline(run: Run, runs: list[Run]) -> Run | None:
    """The undefended evaluation of the same codec on the same images."""
    for other in runs:
        if other.is_evaluation and not other.defended:
            if codec_key(other) == codec_key(run) and data_key(other) == data_key(run):
                return other
    return None
