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
MAX_PIXELS = 64_000_000  # beyond this a single forward pass needs tens of GiB


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and what to do."""


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """An image file as a float tensor (3, H, W) in [0,1].

    Grayscale, palette, alpha and 16-bit images are converted to 8-bit-range RGB with a warning;
    a corrupt, tiny or huge image raises ImageError.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{path} is {width}x{height} ({width * height / 1e6:.0f} MP), above the limit of "
                    f"{max_pixels / 1e6:.0f} MP; downscale or tile it (or raise data.max_pixels)"
                )
            img.load()
            array = _to_rgb_array(img, path)
    except ImageError:
        raise
    except Exception as err:  # PIL raises many types for truncated or non-image files
        raise ImageError(f"cannot read image {path}: {err}. Remove or replace the file.") from err
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"{path} is {width}x{height}: images need at least {MIN_SIDE} px per side")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()


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


def write_png(x: torch.Tensor, path: str | Path) -> Path:
    """Save a (3,H,W) or (1,3,H,W) [0,1] tensor as an 8-bit PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = x.detach().reshape(-1, *x.shape[-2:]).clamp(0, 1)
    array = (x.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


def find_images(root: str | Path) -> list[Path]:
    """All image files under root (recursive), sorted; a clear error when root is missing."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageError(f"image folder {root} does not exist; set data.root to a folder of images")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def usable_images(paths: list[Path], min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> list[Path]:
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
