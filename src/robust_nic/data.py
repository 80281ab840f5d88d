"""Image sources (bundled sample photos, any folder, Kodak) and the LightningDataModule."""

from __future__ import annotations

import random
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from robust_nic.images import (
    MAX_DECODE_PIXELS,
    MAX_PIXELS,
    ImageError,
    check_whole_image_sizes,
    find_images,
    read_image,
    to_uint8,
    usable_images,
)

# scikit-image ships these colour photos inside its wheel (no download).
SAMPLE_TRAIN = ("astronaut.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "retina.jpg")
SAMPLE_HELDOUT = ("chelsea.png", "coffee.png", "rocket.jpg")

KODAK_URL = "https://r0k.us/graphics/kodak/kodak/kodim{:02d}.png"
KODAK_COUNT = 24


def sample_photo_dir() -> Path:
    import skimage.data

    return Path(skimage.data.data_dir)


def sample_photos(names: tuple[str, ...] | list[str]) -> list[Path]:
    root = sample_photo_dir()
    paths = [root / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ImageError(f"scikit-image's sample photos {missing} are missing from {root}; reinstall scikit-image")
    return paths


def download_kodak(root: str | Path) -> Path:
    """Fetch the 24 Kodak images into root (skipping those present); explain what to do offline."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for index in range(1, KODAK_COUNT + 1):
        target = root / f"kodim{index:02d}.png"
        if target.is_file():
            continue
        url = KODAK_URL.format(index)
        try:
            partial = target.with_suffix(".part")
            urllib.request.urlretrieve(url, partial)
            partial.rename(target)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise ImageError(
                f"could not download the Kodak set ({url}: {err}). Offline? Copy kodim01.png..kodim24.png "
                f"into {root} (data.root), or use data=folder data.root=DIR with your own images."
            ) from err
    return root


def split_files(cfg: Mapping) -> dict[str, list[Path]]:
    """Train / val / test file lists for a `data` config (samples, folder or kodak).

    Validation and test images are coded (and attacked) whole: any above data.max_pixels stops the run
    here, before any work, with the memory it would need. Training only crops, so its images are bounded
    by the decode limit alone.
    """
    files = _split_files(cfg)
    check_whole_image_sizes(sorted(set(files["val"]) | set(files["test"])), whole_image_limit(cfg))
    return files


def whole_image_limit(cfg: Mapping) -> int:
    return int(cfg.get("max_pixels") or MAX_PIXELS)


def _split_files(cfg: Mapping) -> dict[str, list[Path]]:
    kind = cfg["name"]
    if kind == "samples":
        train = sample_photos(cfg.get("train_photos") or SAMPLE_TRAIN)
        heldout = sample_photos(cfg.get("heldout_photos") or SAMPLE_HELDOUT)
        return {"train": train, "val": heldout, "test": heldout}
    if kind == "kodak":
        root = download_kodak(cfg["root"])
        files = _usable(find_images(root), root)
        return {"train": files, "val": files, "test": files}
    if kind == "folder":
        if not cfg.get("root"):
            raise ImageError("data=folder needs data.root=DIR (a folder of png/jpg/webp images)")
        files = _usable(find_images(cfg["root"]), cfg["root"])
        if cfg.get("val_root"):
            val = _usable(find_images(cfg["val_root"]), cfg["val_root"])
            train = files
        else:
            # Hold out a deterministic fraction for validation (at least one image).
            shuffled = files[:]
            random.Random(0).shuffle(shuffled)
            count = max(1, round(len(files) * float(cfg.get("val_fraction", 0.1))))
            val, train = sorted(shuffled[:count]), sorted(shuffled[count:]) or sorted(shuffled[:count])
        test = _usable(find_images(cfg["test_root"]), cfg["test_root"]) if cfg.get("test_root") else files
        return {"train": train, "val": val, "test": test}
    raise ImageError(f"unknown data source {kind!r}; choose data=samples, data=folder or data=kodak")


def _usable(paths: list[Path], root) -> list[Path]:
    usable = usable_images(paths, max_pixels=MAX_DECODE_PIXELS)
    if not usable:
        found = f"{len(paths)} image files, none usable" if paths else "no png/jpg/jpeg/webp files"
        raise ImageError(f"{root}: {found}; point data.root at a folder of RGB images")
    return usable


class ImageFiles(Dataset):
    """Whole images (for validation and test, and the sources of training crops), decoded once on first use
    and kept in memory as 8-bit.

    A file that fails to decode (a truncated JPEG passes the header check of the folder scan) is skipped
    with a warning and listed in `skipped`: one bad file does not stop a training run's validation.
    """

    def __init__(self, paths: list[Path], cache: bool = True, max_pixels: int = MAX_DECODE_PIXELS):
        self.candidates = list(paths)
        self.cache = cache
        self.max_pixels = max_pixels
        self.skipped: list[Path] = []
        self._paths: list[Path] | None = None
        self._images: dict[int, torch.Tensor] = {}

    @property
    def paths(self) -> list[Path]:
        """The images that decode (all of them are decoded the first time this is asked)."""
        if self._paths is None:
            self._paths = self._decodable()
        return self._paths

    def _decodable(self) -> list[Path]:
        readable = []
        for path in self.candidates:
            try:
                image = read_image(path, self.max_pixels)
            except ImageError as err:
                warnings.warn(f"skipping image {Path(path).name}: {err}", stacklevel=3)
                self.skipped.append(Path(path))
                continue
            if self.cache:  # kept as uint8 (a quarter of the memory); every access returns the same values
                self._images[len(readable)] = to_uint8(image)
            readable.append(path)
        if self.candidates and not readable:
            raise ImageError(f"none of the {len(self.candidates)} images could be decoded; see the warnings")
        return readable

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.paths[index]
        cached = self._images.get(index)
        if cached is not None:
            return cached.float() / 255
        image = read_image(path, self.max_pixels)
        if self.cache:
            self._images[index] = to_uint8(image)
            return self._images[index].float() / 255
        return image


class RandomCrops(Dataset):
    """`length` random patch_size crops drawn from the images (a fixed-size epoch for tiny sets).

    Crop positions come from a stream of their own per (seed, rank, loader worker), not from the global
    RNG: every DDP rank seeds the global RNG alike, so crops repeated across ranks. Each stream continues
    across epochs (the train loader keeps its workers), so a run with the same seed and world size draws
    the same crops. A resumed run passes the batch it resumes at (`first_batch`), so it does not replay
    the crops of batches 0, 1, ... again.
    """

    def __init__(
        self, images: ImageFiles, patch_size: int, length: int, seed: int = 0, rank: int = 0, first_batch: int = 0
    ):
        if patch_size <= 0 or patch_size % 64:
            raise ImageError(f"data.patch_size={patch_size} must be a positive multiple of 64 (the codecs' stride)")
        big_enough = []
        for index in range(len(images)):
            height, width = images[index].shape[-2:]
            if min(height, width) >= patch_size:
                big_enough.append(index)
            else:
                warnings.warn(
                    f"skipping {images.paths[index]} for training: {width}x{height} is smaller than "
                    f"data.patch_size={patch_size}",
                    stacklevel=2,
                )
        if not big_enough:
            raise ImageError(f"no training image is at least data.patch_size={patch_size} px; lower data.patch_size")
        self.images, self.indices, self.patch_size, self.length = images, big_enough, patch_size, length
        self.seed, self.rank, self.first_batch = int(seed), int(rank), int(first_batch)
        self._generator: torch.Generator | None = None  # made in the process that draws (main or worker)

    def __len__(self) -> int:
        return self.length

    def crop_generator(self) -> torch.Generator:
        if self._generator is None:
            worker = get_worker_info()
            key = [self.seed, self.rank, worker.id if worker is not None else 0, self.first_batch]
            self._generator = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
        return self._generator

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[self.indices[index % len(self.indices)]]
        height, width = image.shape[-2:]
        generator = self.crop_generator()
        top = torch.randint(0, height - self.patch_size + 1, (), generator=generator).item()
        left = torch.randint(0, width - self.patch_size + 1, (), generator=generator).item()
        return image[:, top : top + self.patch_size, left : left + self.patch_size]


class ImageDataModule(L.LightningDataModule):
    """Random crops for training; whole images (batch 1, any size) for validation and test."""

    def __init__(self, cfg: Mapping, first_batch: int = 0):
        super().__init__()
        self.cfg = dict(cfg)
        self.first_batch = int(first_batch)  # a resumed run's first batch: new crops, not batch 0's again
        self.files: dict[str, list[Path]] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.files is None:
            self.files = split_files(self.cfg)
        max_pixels = whole_image_limit(self.cfg)
        self.train_set = RandomCrops(
            ImageFiles(self.files["train"], max_pixels=MAX_DECODE_PIXELS),  # only crops are coded
            int(self.cfg["patch_size"]),
            int(self.cfg.get("epoch_size") or 1000),
            # seed_everything seeds every rank alike: the rank makes the crop streams differ.
            seed=torch.initial_seed(),
            rank=self.trainer.global_rank if self.trainer is not None else 0,
            first_batch=self.first_batch,
        ) if stage in (None, "fit") else None
        limit = self.cfg.get("max_val_images")
        self.val_set = ImageFiles(self.files["val"][:limit] if limit else self.files["val"], max_pixels=max_pixels)
        self.test_set = ImageFiles(self.files["test"], max_pixels=max_pixels)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        workers = int(self.cfg.get("num_workers") or 0)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,  # also keeps RandomCrops' crop streams going across epochs
            pin_memory=torch.cuda.is_available(),
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, int(self.cfg["batch_size"]), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, 1, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, 1, shuffle=False)
