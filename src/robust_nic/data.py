"""Image sources (bundled sample photos, any folder, Kodak) and the LightningDataModule."""

from __future__ import annotations

import random
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from robust_nic.images import (
    MAX_DECODE_PIXELS,
    ImageError,
    check_whole_image_sizes,
    find_images,
    read_image,
    to_uint8,
    usable_images,
)
from robust_nic.settings import DataSettings

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


def split_files(data: DataSettings) -> dict[str, list[Path]]:
    """Train / val / test file lists of the `data` settings (samples, folder or kodak).

    Validation and test images are coded (and attacked) whole: any above data.max_pixels stops the run
    here, before any work, with the memory it would need. Training only crops, so its images are bounded
    by the decode limit alone.
    """
    files = _split_files(data)
    check_whole_image_sizes(sorted(set(files["val"]) | set(files["test"])), data.max_pixels)
    return files


def check_training_source(data: DataSettings) -> None:
    """Refuse, before anything is downloaded or read, to train on an evaluation set."""
    if data.name == "kodak" and not data.train_root:
        raise ImageError(
            "data=kodak is an evaluation set (its 24 images are the test images): give a training folder with "
            "data.train_root=DIR (e.g. CLIC, DIV2K or Flickr2K), validating and testing on Kodak, or train on "
            "data=folder data.root=DIR"
        )


def whole_image_reader(data: DataSettings) -> Callable[[str | Path], torch.Tensor]:
    """Reads an image that is coded whole (test images, a latent-range fit): (3, H, W); one above the run's
    data.max_pixels raises ImageError."""
    limit = data.max_pixels
    return lambda path: read_image(path, limit)


def _split_files(data: DataSettings) -> dict[str, list[Path]]:
    """The source's own split, or with data.train_root: training on that folder, validation on
    data.val_root or else a held-out fraction of train_root, test on the source (never a validation image:
    validation picks the best checkpoint)."""
    files = _source_split(data)
    if data.train_root:
        train, val = _train_and_val(data, _usable(find_images(data.train_root), data.train_root))
        files = {"train": train, "val": val, "test": files["test"]}
    return files


def _train_and_val(data: DataSettings, files: list[Path]) -> tuple[list[Path], list[Path]]:
    """data.val_root's images, or a deterministic data.val_fraction of `files` (at least one) held out."""
    if data.val_root:
        return files, _usable(find_images(data.val_root), data.val_root)
    shuffled = files[:]
    random.Random(0).shuffle(shuffled)
    count = max(1, round(len(files) * data.val_fraction))
    return sorted(shuffled[count:]) or sorted(shuffled[:count]), sorted(shuffled[:count])


def _source_split(data: DataSettings) -> dict[str, list[Path]]:
    """The split of data.name (DataSettings allows samples, kodak and folder, the latter with a root)."""
    if data.name == "samples":
        train, val = sample_photos(data.train_photos), sample_photos(data.val_photos)
        return {"train": train, "val": val, "test": sample_photos(data.heldout_photos)}
    if data.name == "kodak":
        root = download_kodak(data.root)
        files = _usable(find_images(root), root)
        return {"train": [], "val": files, "test": files}  # an evaluation set: see check_training_source
    files = _usable(find_images(data.root), data.root)
    train, val = _train_and_val(data, files)
    test = _usable(find_images(data.test_root), data.test_root) if data.test_root else files
    return {"train": train, "val": val, "test": test}


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


def stream_seed(seed: int, rank: int, batch_index: int, stream: int = 0, *more: int) -> int:
    """The seed of one random stream of one training batch: a function of (seed, rank, batch index,
    stream, ...) alone, so a run resumed at any batch draws exactly what the uninterrupted run drew there."""
    key = [int(seed), int(rank), int(batch_index), int(stream), *map(int, more)]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def batch_generator(seed: int, rank: int, batch_index: int) -> torch.Generator:
    """The crop stream of one training batch (stream 0)."""
    return torch.Generator().manual_seed(stream_seed(seed, rank, batch_index))


class CropBatches(IterableDataset):
    """An endless stream of training batches, batch k being `batch_size` random patch_size crops drawn
    with batch_generator(seed, rank, k): the images and crop positions depend only on (seed, rank, k).

    A resumed run starts the stream at the batch it resumes at (`first_batch`), so it sees exactly the
    batches the uninterrupted run saw from there; DDP ranks draw different crops. With loader workers,
    worker w makes batches w, w + W, ... and the loader returns them in order.
    """

    def __init__(self, images: ImageFiles, patch_size: int, batch_size: int, seed: int = 0, rank: int = 0,
                 first_batch: int = 0):  # fmt: skip
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
        self.images, self.indices, self.patch_size = images, big_enough, int(patch_size)
        self.batch_size, self.seed, self.rank, self.first_batch = int(batch_size), int(seed), int(rank), int(first_batch)

    def batch(self, batch_index: int) -> torch.Tensor:
        """Training batch number `batch_index` (counted from the start of training)."""
        generator = batch_generator(self.seed, self.rank, batch_index)
        picks = torch.randint(0, len(self.indices), (self.batch_size,), generator=generator).tolist()
        crops = []
        for pick in picks:
            image = self.images[self.indices[pick]]
            height, width = image.shape[-2:]
            top = torch.randint(0, height - self.patch_size + 1, (), generator=generator).item()
            left = torch.randint(0, width - self.patch_size + 1, (), generator=generator).item()
            crops.append(image[:, top : top + self.patch_size, left : left + self.patch_size])
        return torch.stack(crops)

    def __iter__(self):
        worker = get_worker_info()
        offset, stride = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        index = self.first_batch + offset
        while True:
            yield self.batch(index)
            index += stride


class ImageDataModule(L.LightningDataModule):
    """An endless stream of random-crop batches for training (trainer.max_steps ends it); whole images
    (batch 1, any size) for validation and test."""

    def __init__(self, data: DataSettings, first_batch: int = 0, seed: int = 0):
        super().__init__()
        self.data = data
        self.seed = int(seed)
        self.first_batch = int(first_batch)  # a resumed run's first batch: new crops, not batch 0's again
        self.files: dict[str, list[Path]] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.files is None:
            self.files = split_files(self.data)
        max_pixels = self.data.max_pixels
        self.train_set = CropBatches(
            ImageFiles(self.files["train"], max_pixels=MAX_DECODE_PIXELS),  # only crops are coded
            self.data.patch_size,
            self.data.batch_size,
            seed=self.seed,
            # seed_everything seeds every rank alike: the rank makes the crop streams differ.
            rank=self.trainer.global_rank if self.trainer is not None else 0,
            first_batch=self.first_batch,
        ) if stage in (None, "fit") else None
        limit = self.data.max_val_images
        self.val_set = ImageFiles(self.files["val"][:limit] if limit else self.files["val"], max_pixels=max_pixels)
        self.test_set = ImageFiles(self.files["test"], max_pixels=max_pixels)

    def _loader(self, dataset: Dataset, batch_size: int | None) -> DataLoader:
        workers = self.data.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, None)  # CropBatches yields whole batches

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, 1)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, 1)
