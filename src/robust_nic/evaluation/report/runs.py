"""The run directories a report gathers: their settings, metrics, and which runs match."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from robust_nic.evaluation.labels import model_label
from robust_nic.evaluation.manifest import read_manifest
from robust_nic.evaluation.metric_keys import clean_key, upgrade_names
from robust_nic.run_dir import natural_order


@dataclass
class Run:
    path: Path
    name: str
    settings: dict
    metrics: dict  # numeric entries of metrics.json only
    manifest: dict | None
    info: dict = field(default_factory=dict)  # its other entries (partial, skipped images, ...)

    @property
    def partial(self) -> bool:
        return bool(self.info.get("partial"))

    @property
    def is_study(self) -> bool:
        return self.manifest is not None

    @property
    def is_evaluation(self) -> bool:
        return self.manifest is None and clean_key("psnr") in self.metrics

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
    """Run directories given directly or found below the given folders (in natural order: a multirun's job
    2 before job 10; each once).

    A run whose files cannot be read (truncated metrics.json, broken config.yaml) or that did not finish
    (metrics.json marked partial) is skipped with a warning naming the file; FileNotFoundError only when
    no valid run is left.
    """
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass evaluation or study run directories")
        candidates = [path / "config.yaml"] + sorted(path.rglob("config.yaml"), key=natural_order)
        for config in candidates:
            run = config.parent
            if config.is_file() and ".hydra" not in run.parts and _has_results(run):
                found[run.resolve()] = None
    names = run_names(list(found)) if found else []
    runs = [run for run in map(_load_or_skip, found, names) if run is not None]
    if not runs:
        skipped = " (every run found was skipped, see the warnings)" if found else ""
        raise FileNotFoundError(
            f"no run directories (config.yaml with metrics.json or study.json) in {[str(p) for p in paths]}{skipped}"
        )
    return runs


class RunFileError(ValueError):
    """A run directory's file cannot be used; the message names the file."""


def _load_or_skip(path: Path, name: str) -> Run | None:
    try:
        run = _load(path, name)
    except RunFileError as err:
        warnings.warn(f"skipping run {path}: {err}", stacklevel=3)
        return None
    if run.partial:
        reason = run.info.get("partial_reason") or run.info.get("reason") or "it did not finish"
        warnings.warn(
            f"skipping run {path}: its metrics.json is partial ({reason}); re-run it to completion", stacklevel=3
        )
        return None
    return run


def _has_results(run: Path) -> bool:
    return (run / "metrics.json").is_file() or (run / "study.json").is_file()


def run_names(paths: list[Path]) -> list[str]:
    """Short unique names: each path relative to the deepest folder common to all runs."""
    if len(paths) == 1:
        return [paths[0].name]
    common = Path(os.path.commonpath(paths))
    return [str(p.relative_to(common)) or p.name for p in paths]


def _load(path: Path, name: str) -> Run:
    settings = _read(path / "config.yaml", yaml.safe_load)
    if settings is not None and not isinstance(settings, dict):
        raise RunFileError(f"{path / 'config.yaml'} is not a mapping of settings")
    raw = _read(path / "metrics.json", json.loads) if (path / "metrics.json").is_file() else {}
    if not isinstance(raw, dict):
        raise RunFileError(f"{path / 'metrics.json'} is not a JSON object")
    metrics = upgrade_names({k: float(v) for k, v in raw.items() if _is_number(v)})  # older runs' names too
    info = {k: v for k, v in raw.items() if k not in metrics}
    try:
        manifest = read_manifest(path)
    except ValueError as err:
        raise RunFileError(f"{path / 'study.json'} is not valid JSON ({err})") from err
    return Run(path, name, settings or {}, metrics, manifest, info)


def _read(file: Path, parse):
    try:
        return parse(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        raise RunFileError(f"{file} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err


def _is_number(value) -> bool:
    # NaN counts as a number: a metric that was not measurable stays NaN in tables, never dropped.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
