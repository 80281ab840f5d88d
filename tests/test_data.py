"""Image reading, folders and downloads: odd files are converted or skipped with a clear message."""

from __future__ import annotations

import math
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from conftest import compose_config, photo
from PIL import Image

from robust_nic.config import resolve
from robust_nic.data import ImageDataModule, download_kodak, split_files, whole_image_reader
from robust_nic.images import ImageError, read_image
from robust_nic.settings import DataSettings, group_settings
from robust_nic.training import train


def test_rgb_photo_reads_in_unit_range(tmp_path):
    Image.fromarray(photo("coffee.png")).save(tmp_path / "coffee.png")
    x = read_image(tmp_path / "coffee.png")
    assert x.shape == (3, 400, 600) and 0 <= x.min() and x.max() <= 1


def test_grayscale_is_converted_with_warning(tmp_path):
    Image.fromarray(photo("coffee.png")).convert("L").save(tmp_path / "gray.png")
    with pytest.warns(UserWarning, match="grayscale"):
        x = read_image(tmp_path / "gray.png")
    assert x.shape[0] == 3 and torch.equal(x[0], x[1])


def test_rgba_drops_alpha_with_warning(tmp_path):
    rgba = np.dstack([photo("coffee.png")[:64, :64], np.full((64, 64), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    with pytest.warns(UserWarning, match="alpha"):
        assert read_image(tmp_path / "rgba.png").shape == (3, 64, 64)


def test_16bit_is_scaled_with_warning(tmp_path):
    gray8 = photo("coffee.png")[:64, :64, 0]
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    with pytest.warns(UserWarning, match="16-bit"):
        x = read_image(tmp_path / "deep.png")
    torch.testing.assert_close(x[1], torch.from_numpy(gray8).float() / 255, atol=1e-6, rtol=0)


def test_corrupt_tiny_and_huge_images_raise(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    with pytest.raises(ImageError, match="broken.png"):
        read_image(tmp_path / "broken.png")
    Image.fromarray(photo("coffee.png")[:4, :4]).save(tmp_path / "tiny.png")
    with pytest.raises(ImageError, match="at least"):
        read_image(tmp_path / "tiny.png")
    Image.fromarray(photo("coffee.png")).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="data.max_pixels"):
        read_image(tmp_path / "big.png", max_pixels=1000)


def test_folder_skips_unreadable_files_and_searches_recursively(photo_dir, tmp_path):
    (photo_dir / "sub" / "garbage.jpg").write_bytes(b"not a jpeg")
    try:
        with pytest.warns(UserWarning, match="garbage.jpg"):
            files = split_files(DataSettings(name="folder", root=str(photo_dir), val_fraction=0.25))
    finally:
        (photo_dir / "sub" / "garbage.jpg").unlink()
    names = {p.name for p in files["train"] + files["val"]}
    assert names == {"astronaut.png", "coffee.png", "chelsea_70x90.png", "rocket.jpg"}
    assert len(files["val"]) == 1 and len(files["test"]) == 4


def test_empty_or_unusable_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="no png/jpg"):
        split_files(DataSettings(name="folder", root=str(tmp_path)))
    (tmp_path / "bad.png").write_bytes(b"nothing")
    with pytest.warns(UserWarning), pytest.raises(ImageError, match="none usable"):
        split_files(DataSettings(name="folder", root=str(tmp_path)))
    with pytest.raises(ImageError, match="does not exist"):
        split_files(DataSettings(name="folder", root=str(tmp_path / "missing")))


def test_kodak_offline_explains_what_to_do(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    with pytest.raises(ImageError, match="kodim01.png..kodim24.png"):
        download_kodak(tmp_path / "kodak")


def test_kodak_uses_files_already_present(monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise AssertionError("no download expected")

    monkeypatch.setattr(urllib.request, "urlretrieve", fail)
    for index in range(1, 25):
        Image.fromarray(photo("coffee.png")[:64, :96]).save(tmp_path / f"kodim{index:02d}.png")
    assert len(split_files(DataSettings(name="kodak", root=str(tmp_path)))["test"]) == 24


def test_training_on_kodak_is_refused_before_any_download(monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise AssertionError("no download expected")

    monkeypatch.setattr(urllib.request, "urlretrieve", fail)
    cfg = compose_config("train", ["data=kodak", f"data.root={tmp_path / 'kodak'}", f"hydra.run.dir={tmp_path}"])
    with pytest.raises(ImageError, match=r"data=kodak is an evaluation set .* data.train_root=DIR"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "kodak").exists() and not (tmp_path / "run").exists()


def test_a_training_folder_beside_kodak_keeps_validation_and_test_apart(monkeypatch, tmp_path, photo_dir):
    monkeypatch.setattr(urllib.request, "urlretrieve", lambda *a, **k: pytest.fail("no download expected"))
    for index in range(1, 25):
        Image.fromarray(photo("coffee.png")[index : index + 64, :96]).save(tmp_path / f"kodim{index:02d}.png")
    files = split_files(DataSettings(name="kodak", root=str(tmp_path), train_root=str(photo_dir), val_fraction=0.25))
    assert len(files["test"]) == 24 and all(p.parent == tmp_path for p in files["test"])
    assert len(files["val"]) == 1 and len(files["train"]) == 3
    assert not set(files["val"]) & set(files["train"]) and all(p.is_relative_to(photo_dir) for p in files["val"])


def test_bundled_photos_train_validation_and_test_are_disjoint():
    files = split_files(group_settings(resolve(compose_config("train", [])), "data"))
    names = {split: {p.name for p in paths} for split, paths in files.items()}
    assert names["val"] == {"motorcycle_right.png"} and names["test"] == {"chelsea.png", "coffee.png", "rocket.jpg"}
    assert not (names["train"] & names["val"] or names["train"] & names["test"] or names["val"] & names["test"])


def test_datamodule_crops_and_whole_images(photo_dir):
    dm = ImageDataModule(DataSettings(name="folder", root=str(photo_dir), patch_size=64, batch_size=3, num_workers=0))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (3, 3, 64, 64)
    sizes = {tuple(x.shape[-2:]) for x in dm.test_dataloader()}
    assert (70, 90) in sizes  # whole images, any size


def test_patch_size_must_suit_the_codecs(photo_dir):
    dm = ImageDataModule(DataSettings(name="folder", root=str(photo_dir), patch_size=48, batch_size=2, num_workers=0))
    with pytest.raises(ImageError, match="multiple of 64"):
        dm.setup("fit")


def test_images_coded_whole_above_max_pixels_stop_the_run_before_any_work(tmp_path):
    """Test/validation images are coded and attacked whole: one above data.max_pixels is an error at
    file-listing time naming data.max_pixels and the memory it would need; training only crops, so a
    large training image is fine."""
    import subprocess
    import sys

    from conftest import ROOT

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(photo("coffee.png")).save(folder / "coffee.png")  # 400x600 = 0.24 MP
    Image.fromarray(photo("chelsea.png")[:100, :100]).save(folder / "small.png")
    with pytest.raises(ImageError, match=r"coffee.png \(600x400, 0.2 MP\).*data.max_pixels=100000.*GB"):
        split_files(DataSettings(name="folder", root=str(folder), max_pixels=100_000))
    files = split_files(DataSettings(name="folder", root=str(folder), max_pixels=300_000))
    assert {p.name for p in files["test"]} == {"coffee.png", "small.png"}
    unread = tmp_path / "unread.ckpt"  # a checkpoint file that must not be read: not a codec at all
    unread.write_bytes(b"not a checkpoint")
    run = subprocess.run(
        [sys.executable, "evaluate.py", "data=folder", f"data.root={folder}", "data.max_pixels=100000",
         f"model.checkpoint={unread}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # Stopped on the image size, before even reading the checkpoint.
    assert run.returncode == 2 and "data.max_pixels=100000" in run.stderr, run.stderr[-2000:]
    assert "torch CPU threads:" in run.stdout + run.stderr  # printed at start
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_whole_images_are_read_within_the_runs_max_pixels(tmp_path):
    """Evaluation, studies and fit-latent-range read their whole images through one reader of data.*."""
    Image.fromarray(photo("coffee.png")).save(tmp_path / "coffee.png")  # 600x400 = 0.24 MP
    x = whole_image_reader(DataSettings(name="samples", max_pixels=300_000))(tmp_path / "coffee.png")
    assert x.shape == (3, 400, 600)
    with pytest.raises(ImageError, match="data.max_pixels=100000"):
        whole_image_reader(DataSettings(name="samples", max_pixels=100_000))(tmp_path / "coffee.png")


def test_training_validation_skips_an_undecodable_image_with_a_warning(tmp_path, photo_dir):
    """A truncated JPEG passes the folder scan (its header reads) and fails when decoded: validation warns,
    skips it and validates on the other images; training goes on."""
    from conftest import FAST, compose_config

    from robust_nic.trackers import read_logged_rows
    from robust_nic.training import train

    val = tmp_path / "val"
    val.mkdir()
    Image.fromarray(photo("coffee.png")[:96, :96]).save(val / "a_coffee.png")
    Image.fromarray(photo("chelsea.png")[:96, :96]).save(val / "broken.jpg", quality=95)
    data = (val / "broken.jpg").read_bytes()
    (val / "broken.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(photo("rocket.jpg")[:96, :96]).save(val / "c_rocket.png")

    args = [*FAST, f"data.root={photo_dir}", f"data.val_root={val}", "trainer.max_steps=2"]
    with pytest.warns(UserWarning, match="skipping image broken.jpg"):
        results = train(compose_config("train", args), tmp_path / "run")
    assert results["steps"] == 2
    val_rows = [r for r in read_logged_rows(tmp_path / "run") if r.get("val/psnr")]
    assert len(val_rows) == 1 and math.isfinite(float(val_rows[0]["val/psnr"]))  # the two good images

    dm = ImageDataModule(DataSettings(name="folder", root=str(photo_dir), val_root=str(val), patch_size=64, num_workers=0))
    dm.setup("validate")
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert len(dm.val_set) == 2
    assert [p.name for p in dm.val_set.paths] == ["a_coffee.png", "c_rocket.png"]
    assert dm.val_set.skipped == [val / "broken.jpg"]
