"""Short, readable names for codecs in tables and figure legends (no heavy imports: the report uses it)."""

from __future__ import annotations

from pathlib import Path

# Checkpoint file names that say nothing by themselves: prefix them with their run folder.
GENERIC_STEMS = ("last", "best", "codec", "model", "checkpoint", "interrupted")


def checkpoint_label(path: str | Path) -> str:
    """`a.pth.tar` -> `a`; `outputs/train/RUN/checkpoints/last.ckpt` -> `RUN/last`."""
    path = Path(path)
    stem = path.name.split(".")[0] or path.name
    if stem.split("-")[0] not in GENERIC_STEMS:
        return stem
    parent = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"{parent.name}/{stem}" if parent.name else stem


def model_label(model: dict) -> str:
    """A codec from its `model` settings: the checkpoint's name, or `<name>-q<quality>` for zoo weights."""
    if model.get("checkpoint"):
        return checkpoint_label(model["checkpoint"])
    return f"{model.get('name') or model.get('arch')}-q{model.get('quality')}"


def unique(label: str, taken) -> str:
    """label, or label#2, label#3... if already taken."""
    if label not in taken:
        return label
    index = 2
    while f"{label}#{index}" in taken:
        index += 1
    return f"{label}#{index}"
