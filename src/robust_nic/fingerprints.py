"""Content fingerprints of the images a codec was trained and validated on, kept in its checkpoint, so an
evaluation can refuse to measure a codec on an image it has seen (a re-encoded copy included).

A fingerprint is the sha256 of the decoded 8-bit RGB pixels and their shape: the same photo saved as PNG,
as lossless WebP or under another name has the same fingerprint; a lossily re-compressed copy does not.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from robust_nic.images import ImageError, read_image, to_uint8

log = logging.getLogger(__name__)

KEY = "image_fingerprints"  # checkpoint key: {"train": {fingerprint: file name}, "val": {...}}
SPLITS = ("train", "val")
UNKNOWN_PRETRAINED = "unknown (pretrained weights)"
UNKNOWN_NO_LIST = "unknown (the checkpoint holds no training image list)"


class TrainingImageError(ValueError):
    """An evaluated image is one the codec was trained or validated on."""


def fingerprint(path: str | Path) -> str:
    pixels = to_uint8(read_image(path)).contiguous()
    digest = hashlib.sha256(str(tuple(pixels.shape)).encode())
    digest.update(pixels.numpy().tobytes())
    return digest.hexdigest()


def fingerprints(paths: Iterable[Path]) -> dict[str, str]:
    """fingerprint -> file name, for the images that decode (the others are never trained on)."""
    found = {}
    for path in paths:
        try:
            found[fingerprint(path)] = Path(path).name
        except ImageError:
            continue
    return found


class ImageFingerprints(Callback):
    """Writes the fingerprints of the datamodule's training and validation images into every checkpoint."""

    def __init__(self):
        self.recorded: dict[str, dict[str, str]] | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self.recorded is None:
            files = getattr(trainer.datamodule, "files", None) or {}
            self.recorded = {split: fingerprints(files.get(split, [])) for split in SPLITS}
        checkpoint[KEY] = self.recorded


def checkpoint_fingerprints(path: str | Path) -> dict[str, dict[str, str]] | None:
    """The fingerprints a checkpoint records; None when it records none (exported or foreign weights)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (the codec loader reports unreadable checkpoints with its own message)
        return None
    recorded = checkpoint.get(KEY) if isinstance(checkpoint, dict) else None
    return recorded if isinstance(recorded, dict) else None


def training_image_check(model: dict, checkpoints: list[str], files: list[Path], allow: bool) -> str:
    """Refuse (TrainingImageError) to evaluate on an image whose fingerprint a checkpoint records, naming
    the image and the training file it matches, unless `allow`. Returns what metrics.json says about it."""
    if not checkpoints:
        return UNKNOWN_PRETRAINED if model.get("pretrained") else UNKNOWN_NO_LIST
    records = {path: checkpoint_fingerprints(path) for path in checkpoints}
    if all(r is None for r in records.values()):
        return UNKNOWN_NO_LIST
    tested = fingerprints(files)
    matches = []
    for path, recorded in records.items():
        for split in SPLITS:
            for digest, name in (recorded or {}).get(split, {}).items():
                if digest in tested:
                    matches.append(f"{tested[digest]} = {split} image {name} of {path}")
    if not matches:
        unrecorded = [p for p, r in records.items() if r is None]
        note = f" ({len(unrecorded)} checkpoint(s) without a list)" if unrecorded else ""
        return f"none of the {len(tested)} test images was trained or validated on{note}"
    shown = "; ".join(matches[:10]) + (f"; and {len(matches) - 10} more" if len(matches) > 10 else "")
    if not allow:
        raise TrainingImageError(
            f"{len(matches)} test image(s) were trained or validated on: {shown}. Evaluate on other images "
            "(e.g. data.test_root=DIR), or set eval.allow_training_images=true to measure them anyway"
        )
    log.warning("evaluating on images the codec was trained or validated on (allowed): %s", shown)
    return f"allowed by eval.allow_training_images: {shown}"

