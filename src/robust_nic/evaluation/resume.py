"""What lets evaluate.py (and the noise study) continue a killed run: every image draws from seeds of
(seed, image name) alone, the finished images' rows are read back from the run's rows file (per_image.csv),
and a re-run with other settings is refused.

The run directory's lock (run_dir.RunDirLock) keeps a second job out while one runs; this module decides
what a later job into the same directory may do with what the first one left.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
from pathlib import Path

import torch
import yaml

from robust_nic.attacks.suite import AttackSuite
from robust_nic.config import ConfigError
from robust_nic.evaluation.metric_keys import upgrade_names
from robust_nic.settings import SCHEMAS, EvaluateRunSettings, schema

log = logging.getLogger(__name__)

ROWS = "per_image.csv"  # evaluate.py's rows file
SETTINGS = "config.yaml"
# Settings that change neither which images are measured how nor their numbers: a re-run may differ in them
# (max_images: a larger value continues with the next images of the same sorted list; threads and
# eval.batch_size change floating-point sums only).
FREE = ("progress", "threads", "max_images", "save_images", "eval.batch_size")


class EvaluationSettingsError(ConfigError):
    """A run directory holds an evaluation with other settings."""


def image_seed(seed: int, name: str) -> int:
    """The seed of everything random about one image: a function of (seed, image name) alone."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def seeded_for(attack, name: str | list[str]):
    """`attack` with its generator seeded by (attack.seed, image name); unseeded attacks stay unseeded.
    A list of names (a batch): one seed per image, so each draws what it draws alone (attacks.draws)."""
    if attack is None:
        return None
    if isinstance(attack, AttackSuite):
        return dataclasses.replace(attack, members={k: seeded_for(a, name) for k, a in attack.members.items()})
    if attack.seed is None:
        return attack
    if isinstance(name, str):
        return dataclasses.replace(attack, seed=image_seed(attack.seed, name))
    return dataclasses.replace(attack, seed=tuple(image_seed(attack.seed, one) for one in name))


def seed_image(seed: int, name: str) -> None:
    """Seed torch's global generators for one image (whatever draws from them, in any order of work)."""
    torch.manual_seed(image_seed(seed, name))


def differing_keys(previous: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (present in one only included), FREE keys left out. A key the
    saved settings lack (an earlier version's run) is no difference when today's value is its typed default:
    a key is added with the behaviour it had before as its default."""
    keys = []
    for key in sorted(set(previous) | set(current), key=str):
        dotted = f"{prefix}{key}"
        if dotted in FREE:
            continue
        old, new = previous.get(key), current.get(key)
        if isinstance(new, dict) and (isinstance(old, dict) or key not in previous):
            keys += differing_keys(old or {}, new, f"{dotted}.")
        elif key not in previous and new == typed_default(dotted):
            continue
        elif old != new:
            keys.append(dotted)
    return keys


def typed_default(dotted: str):
    """The default of an evaluation setting by its dotted key (`data.heldout_photos`, `eval.batch_size`,
    `max_images`) from its settings dataclass, or a marker equal to nothing for a key without one."""
    node = schema(EvaluateRunSettings) | {group: schema(SCHEMAS[group]) for group in ("data", "eval", "attack", "model", "loss")}
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return NO_DEFAULT
        node = node[part]
    return node


NO_DEFAULT = object()


def check_same_settings(run_dir: Path, settings: dict, rows_file: str = ROWS) -> None:
    """Refuse to continue an evaluation in `run_dir` (whose rows are `rows_file`) with other settings,
    naming the keys that differ."""
    rows, saved = Path(run_dir) / rows_file, Path(run_dir) / SETTINGS
    if not rows.is_file() or not saved.is_file():
        return
    previous = yaml.safe_load(saved.read_text()) or {}
    # Round-trip the current settings through YAML too: the saved file is compared value for value.
    differ = differing_keys(previous, yaml.safe_load(yaml.safe_dump(settings)))
    if differ:
        shown = ", ".join(f"{k} ({_at(previous, k)!r} -> {_at(settings, k)!r})" for k in differ[:8])
        raise EvaluationSettingsError(
            f"{run_dir} holds an evaluation with other settings: {shown}{', ...' if len(differ) > 8 else ''}. "
            "Re-run with its settings to continue it (see its config.yaml), or choose another hydra.run.dir"
        )


def _at(settings: dict, dotted: str):
    value = settings
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def finished_rows(run_dir: Path, rows_file: str = ROWS) -> list[dict]:
    """The rows `rows_file` holds (each image's rows are written together), values as the run had them.
    Columns of an earlier version's names are read as today's (metric_keys.RENAMED: the same numbers), so a
    continued run writes one consistent file."""
    path = Path(run_dir) / rows_file
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [upgrade_names({k: _value(v) for k, v in row.items() if v != ""}) for row in rows]


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
