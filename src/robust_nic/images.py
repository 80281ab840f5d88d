"""Reading and writing images as RGB tensors in [0,1], with clear errors for odd files."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MIN_SIDE = 8  # smaller images carry no usable content for a codec
# Largest file decoded at all (training crops come from it): 64 MP is 192 MB as 8-bit RGB.
MAX_DECODE_PIXELS = 64_000_000
# bench/memory.py (bench/results/memory_cpu.json): a default attacked evaluation peaks at about
# ATTACK_GB_BASE + ATTACK_GB_PER_MP * MP for a zoo-size bmshj2018-hyperprior (the default tiny codec:
# 1.2 + 1.04 * MP), so data.max_pixels' default (settings.DataSettings), 3.5 MP, stays within 8 GB for both.
# Heavier codecs (mbt2018, cheng2020) need more.
ATTACK_GB_BASE = 1.3
ATTACK_GB_PER_MP = 1.84


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and what to do."""


def read_image(path: str | Path, max_pixels: int = MAX_DECODE_PIXELS) -> torch.Tensor:
    """An image file as a float tensor (3, H, W) in [0,1].

    Grayscale, palette, alpha and 16-bit images are converted to 8-bit-range RGB with a warning;
    a corrupt, tiny or huge image raises ImageError.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(too_large_message([(path, width, height)], max_pixels))
            img.load()
            array = _to_rgb_array(img, path)
    except ImageError:
        raise
    except Exception as err:  # PIL raises many types for truncated or non-image files
        raise ImageError(f"cannot read image {path}: {err}. Remove or replace the file.") from err
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"{path} is {width}x{height}: images need at least {MIN_SIDE} px per side")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(H, W) of an image file from its header (no pixels decoded); None when it cannot be read."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception:  # PIL raises many types; read_image says what is wrong where the image is read
        return None
    return height, width


def _to_rgb_array(img: Image.Image, path: Path) -> np.ndarray:
    """HxWx3 float array in [0,1] from any PIL mode, warning about lossy conversions."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        warnings.warn(f"{path}: 16-bit grayscale image converted to 8-bit RGB", stacklevel=3)
        gray = np.asarray(img, dtype=np.float64)
        gray = gray / (65535.0 if gray.max() > 255 or mode.startswith("I;16") else 255.0)
        return np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2)
    if mode == "F":
        warnings.warn(f"{path}: floating-point image clipped to [0,1] and converted to RGB", stacklevel=3)
        return np.repeat(np.clip(np.asarray(img, dtype=np.float64), 0, 1)[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        warnings.warn(f"{path}: alpha channel dropped (composited on white)", stacklevel=3)
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    elif mode in ("L", "1"):
        warnings.warn(f"{path}: grayscale image converted to RGB", stacklevel=3)
    elif mode not in ("RGB", "P"):
        warnings.warn(f"{path}: {mode} image converted to RGB", stacklevel=3)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0,1] values as the uint8 levels an image file holds (rounded, not truncated), on the CPU."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def write_png(x: torch.Tensor, path: str | Path) -> Path:
    """Save a (3,H,W) or (1,3,H,W) [0,1] tensor as an 8-bit PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = to_uint8(x.reshape(-1, *x.shape[-2:])).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
    return path


def find_images(root: str | Path) -> list[Path]:
    """All image files under root (recursive), sorted; a clear error when root is missing."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageError(f"image folder {root} does not exist; set data.root to a folder of images")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def too_large_message(sizes: list[tuple[Path, int, int]], max_pixels: int) -> str:
    """Which images exceed data.max_pixels, what they would cost, and what to do."""
    largest = max(w * h for _, w, h in sizes) / 1e6
    names = ", ".join(f"{p} ({w}x{h}, {w * h / 1e6:.1f} MP)" for p, w, h in sizes[:5])
    more = f" and {len(sizes) - 5} more" if len(sizes) > 5 else ""
    need = ATTACK_GB_BASE + ATTACK_GB_PER_MP * largest
    return (
        f"{names}{more} exceed data.max_pixels={max_pixels} ({max_pixels / 1e6:g} MP), the largest image coded "
        f"and attacked whole; an attacked evaluation of {largest:.1f} MP needs about {need:.0f} GB of memory "
        f"(bench/memory.py). Downscale or tile these images, leave them out, or raise "
        f"data.max_pixels={int(largest * 1e6) + 1} if the machine has the memory."
    )


def check_whole_image_sizes(paths: list[Path], max_pixels: int) -> None:
    """Before any work: every image coded whole fits data.max_pixels (headers only)."""
    sizes = []
    for path in paths:
        try:
            with Image.open(path) as img:
                width, height = img.size
        except Exception:  # unreadable files are reported (and skipped) where they are read
            continue
        if width * height > max_pixels:
            sizes.append((Path(path), width, height))
    if sizes:
        raise ImageError(too_large_message(sizes, max_pixels))


def usable_images(paths: list[Path], min_side: int = MIN_SIDE, max_pixels: int = MAX_DECODE_PIXELS) -> list[Path]:
    """The paths whose header reads and whose size is usable; the others are skipped with a warning."""
    usable = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.verify()
                width, height = img.size
        except Exception as err:
            warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=2)
            continue
        if min(width, height) < min_side:
            warnings.warn(f"skipping {path}: {width}x{height} is smaller than {min_side} px", stacklevel=2)
        elif width * height > max_pixels:
            warnings.warn(f"skipping {path}: {width}x{height} exceeds {max_pixels / 1e6:.0f} MP", stacklevel=2)
        else:
            usable.append(path)
    return usable
