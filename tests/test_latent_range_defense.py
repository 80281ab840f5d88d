"""defense=latent_range: added as one file + one YAML through the registry; fitted by the CLI, coded by
the real entropy coder, attacked transferred and adaptively by evaluate.py."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config

from robust_nic.cli import main
from robust_nic.codecs import export_codec
from robust_nic.coding import code, pad
from robust_nic.defenses import DefenseError, build_defense
from robust_nic.evaluation.runner import evaluate
from robust_nic.settings import DataSettings


@pytest.fixture(scope="module")
def checkpoint(small_codec, tmp_path_factory):
    return export_codec(small_codec, tmp_path_factory.mktemp("ckpt") / "codec.pth.tar")


@pytest.fixture(scope="module")
def ranges(checkpoint, photo_dir):
    main(["fit-latent-range", "--checkpoint", str(checkpoint), "data=folder", f"data.root={photo_dir}"])
    path = checkpoint.parent / "codec.pth.tar.latent_range.pt"
    assert path.is_file()
    return path


def test_fitted_ranges_are_the_training_latents_extremes(small_codec, ranges, photo_dir):
    from robust_nic.data import split_files
    from robust_nic.images import read_image

    fitted = torch.load(ranges, weights_only=True)
    train = split_files(DataSettings(name="folder", root=str(photo_dir)))["train"]
    with torch.no_grad():
        ys = [small_codec.g_a(pad(read_image(p)[None])[0]) for p in train]
    low = torch.stack([y.amin(dim=(0, 2, 3)) for y in ys]).amin(0)
    high = torch.stack([y.amax(dim=(0, 2, 3)) for y in ys]).amax(0)
    assert fitted["images"] == len(train) and torch.equal(fitted["low"], low) and torch.equal(fitted["high"], high)


def test_clamp_goes_through_the_real_coder(small_codec, ranges, tmp_path, photo_dir):
    from robust_nic.images import read_image

    x = read_image(next(iter(sorted(photo_dir.rglob("*.png")))))[None]
    defense = build_defense({"name": "latent_range", "ranges": str(ranges)}, small_codec)
    plain, defended = code(small_codec, x), defense.code(x)
    with torch.no_grad():
        y = small_codec.g_a(pad(x)[0])
    fitted = torch.load(ranges, weights_only=True)
    if ((y >= fitted["low"].view(1, -1, 1, 1)) & (y <= fitted["high"].view(1, -1, 1, 1))).all():
        # a training image's latents lie inside their own range: the defense codes it bit-identically
        assert torch.equal(plain.x_hat, defended.x_hat) and torch.equal(plain.bpp, defended.bpp)
    # Collapsed ranges (every channel clamped to 0): the bitstream holds a constant latent, whatever x is.
    zero = tmp_path / "zero.pt"
    torch.save({"low": torch.zeros_like(fitted["low"]), "high": torch.zeros_like(fitted["high"])}, zero)
    collapsed = build_defense({"name": "latent_range", "ranges": str(zero)}, small_codec)
    other = torch.rand_like(x)
    a, b = collapsed.code(x), collapsed.code(other)
    assert torch.equal(a.x_hat, b.x_hat) and a.bpp < plain.bpp
    assert torch.equal(code(small_codec, x).x_hat, plain.x_hat)  # the codec itself is left as it was


def test_clear_errors(small_codec, tmp_path):
    with pytest.raises(DefenseError, match="fit-latent-range"):
        build_defense({"name": "latent_range"}, small_codec)
    with pytest.raises(DefenseError, match="does not exist"):
        build_defense({"name": "latent_range", "ranges": str(tmp_path / "nope.pt")}, small_codec)
    wrong = tmp_path / "wrong.pt"
    torch.save({"low": torch.zeros(5), "high": torch.ones(5)}, wrong)
    with pytest.raises(DefenseError, match="5 latent channels, the codec has"):
        build_defense({"name": "latent_range", "ranges": str(wrong)}, small_codec)


def test_evaluation_with_transferred_and_adaptive_attacks(checkpoint, ranges, photo_dir, tmp_path):
    cfg = compose_config("evaluate", [f"model.checkpoint={checkpoint}", "data=folder", f"data.root={photo_dir}",
                                      "device=cpu", "defense=latent_range", f"defense.ranges={ranges}", "attack=pgd",
                                      "attack.steps=3", "max_images=1", "save_images=false"])  # fmt: skip
    metrics = evaluate(cfg, tmp_path)
    for kind in ("adv", "adaptive"):
        assert 40 - 1e-6 <= metrics[f"test/{kind}/psnr_in"] < 50
        assert metrics[f"test/{kind}/delta_psnr"] > 0
    # the adaptive row keeps, per image, the stronger of the adaptive and the transferred example
    assert metrics["test/adaptive/delta_psnr"] >= metrics["test/adv/delta_psnr"] - 1e-9
