"""Shared fixtures: real photo crops from scikit-image, Hydra composition, a small trained codec."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robust_nic.config import compose_config  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# One thread: tiny convolutions gain little from two, and oversubscribed threads were 20x slower here.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Back to one thread after every test: a job run in-process (cli.run_job) sets all cores, and
    multi-threaded float sums would make a later test's exact comparisons depend on the tests before it.
    (A module fixture that runs a job leaves its own tests on the job's thread count, as the job was.)"""
    yield
    torch.set_num_threads(1)

# Small, fast settings for every test run of the real jobs.
FAST = [
    "model.channels=[16,24]",
    "data=folder",
    "data.patch_size=64",
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "trainer.accelerator=cpu",
]


@contextlib.contextmanager
def logging_restored():
    """Around an in-process Hydra job (runpy of train.py/evaluate.py): Hydra configures logging for the job
    (hydra/job_logging=disabled: root level ERROR, existing loggers disabled); later tests need it back."""
    handlers, level = list(logging.root.handlers), logging.root.level
    try:
        yield
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
        for logger in logging.Logger.manager.loggerDict.values():
            if isinstance(logger, logging.Logger):
                logger.disabled = False


def run_script(script: str, argv: list[str]) -> None:
    """Run the checkout's train.py / evaluate.py in this process with `argv` as its command line."""
    import runpy
    import sys

    saved = sys.argv
    sys.argv = [script, *argv]
    try:
        with logging_restored():
            runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        sys.argv = saved


def photo(name: str) -> np.ndarray:
    import skimage.data

    return np.asarray(Image.open(Path(skimage.data.data_dir) / name).convert("RGB"))


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """A folder of real photo crops, one of odd size, in a sub-folder too (recursive search)."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    Image.fromarray(photo("astronaut.png")[100:196, 150:246]).save(root / "astronaut.png")
    Image.fromarray(photo("coffee.png")[100:196, 200:296]).save(root / "sub" / "coffee.png")
    Image.fromarray(photo("chelsea.png")[50:120, 100:190]).save(root / "chelsea_70x90.png")
    Image.fromarray(photo("rocket.jpg")[200:296, 200:296]).save(root / "rocket.jpg", quality=95)
    return root


def train_small_codec(steps: int = 150, channels=(32, 48), seed: int = 0):
    """A bmshj2018-hyperprior with few channels, trained briefly on astronaut crops (real weights)."""
    from robust_nic.codecs import build_codec
    from robust_nic.losses import RateDistortionLoss

    torch.manual_seed(seed)
    codec = build_codec("bmshj2018-hyperprior", 3, channels=list(channels))
    image = torch.from_numpy(photo("astronaut.png")).permute(2, 0, 1).float() / 255
    loss_fn = RateDistortionLoss("mse", 0.0067)
    params = [p for n, p in codec.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in codec.named_parameters() if n.endswith(".quantiles")]
    opt, aux_opt = torch.optim.Adam(params, 3e-4), torch.optim.Adam(aux, 1e-3)
    for _ in range(steps):
        tops = torch.randint(0, 512 - 64, (8,))
        lefts = torch.randint(0, 512 - 64, (8,))
        x = torch.stack([image[:, t : t + 64, s : s + 64] for t, s in zip(tops, lefts, strict=True)])
        loss = loss_fn(codec(x), x)["loss"] + codec.aux_loss()
        opt.zero_grad()
        aux_opt.zero_grad()
        loss.backward()
        opt.step()
        aux_opt.step()
    codec.zero_grad(set_to_none=True)
    codec.eval()
    codec.update(force=True)
    return codec


@pytest.fixture(scope="session")
def small_codec():
    return train_small_codec()


def assert_names_declared(run_dir: Path, rows: str = "per_image.csv") -> None:
    """Every `rows` column (per_image.csv; the noise study's noise_per_image.csv) and metrics.json key of an
    evaluation is a name metric_keys declares: a new ad-hoc name, a hyphen or an old-style
    `<quantity>_attacked` / `<quantity>_delta` fails here."""
    import csv
    import json

    from robust_nic.evaluation import metric_keys

    with open(Path(run_dir) / rows, newline="") as handle:
        columns = next(csv.reader(handle))
    keys = list(json.loads((Path(run_dir) / "metrics.json").read_text()))
    assert columns and keys
    for name in columns + keys:
        names = [part for part in name.split("/") if not part.startswith("eps_")]  # eps_1e-05 is a value
        assert not any("-" in part for part in names) and not name.endswith(("_attacked", "_delta")), name
    assert [c for c in columns if not metric_keys.declared_column(c)] == []
    assert [k for k in keys if not metric_keys.declared_key(k)] == []
