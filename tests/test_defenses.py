"""Defenses: exact dihedral inverses, self-ensemble bitstream round trip and side-information bits,
pre-processing sizes and rates, and input gradients through every defense's differentiable forward."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from skimage import data

from robust_nic.coding import code, forward_padded
from robust_nic.config import CONF_DIR
from robust_nic.defenses import (
    BitDepth,
    DefenseError,
    NoDefense,
    Resize,
    SelfEnsemble,
    SelfEnsembleCoded,
    build_defense,
    container,
    dihedral,
)
from robust_nic.metrics import mse_per_image, psnr, to_8bit
from robust_nic.reconstruction import Surrogate, entropy_modules, patched_quantize
from robust_nic.settings import ConfigError

DEFENSE_CFGS = [
    {"name": "none"},
    {"name": "self_ensemble", "transforms": list(range(8))},
    {"name": "self_ensemble", "transforms": [0, 1, 2, 3]},
    {"name": "resize", "factor": 0.5},
    {"name": "bitdepth", "bits": 5},
]


def astronaut() -> torch.Tensor:
    return torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255)


def crops(image: torch.Tensor, n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, image.shape[1] - h, (n,), generator=g)
    lefts = torch.randint(0, image.shape[2] - w, (n,), generator=g)
    return torch.stack(
        [image[:, t : t + h, s : s + w] for t, s in zip(tops.tolist(), lefts.tolist(), strict=True)]
    )


@pytest.fixture(scope="module")
def codec(small_codec):
    """A copy of the test run's small trained codec (tests/conftest.py): gradient tests here backpropagate
    into its parameters, which must not reach the other test files."""
    return copy.deepcopy(small_codec)


@pytest.fixture(scope="module")
def images():
    """Two non-square, odd-sized crops (50 x 70), 8-bit."""
    return to_8bit(crops(astronaut(), 2, 50, 70, seed=123))


# -- dihedral transforms ----------------------------------------------------------------------------


@pytest.mark.parametrize("k", range(8))
@pytest.mark.parametrize("size", [(6, 6), (5, 9)])
def test_dihedral_transforms_invert_exactly(k, size):
    x = torch.rand(2, 3, *size)
    y = dihedral.transform(x, k)
    expected = (size[1], size[0]) if dihedral.swaps_hw(k) else size
    assert tuple(y.shape[-2:]) == expected
    assert torch.equal(dihedral.inverse(y, k), x)


def test_dihedral_transforms_are_eight_distinct_permutations():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    outs = {tuple(dihedral.transform(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8
    with pytest.raises(ValueError):
        dihedral.transform(x, 8)


def test_container_round_trip_and_rejects_corruption():
    streams = [b"abc", b"", bytes(range(256))]
    packed = container.pack(5, streams)
    assert container.unpack(packed) == (5, streams)
    with pytest.raises(ValueError):
        container.unpack(packed[:-1])
    with pytest.raises(ValueError):
        container.unpack(packed + b"x")


# -- self-ensemble ---------------------------------------------------------------------------------


def test_self_ensemble_round_trip_matches_code(codec, images):
    defense = SelfEnsemble(codec)
    compressed = defense.compress(images)
    assert len(compressed["strings"]) == images.shape[0]
    assert all(isinstance(s, bytes) for s in compressed["strings"])
    dec = defense.decompress(compressed["strings"], compressed["shape"])
    assert torch.equal(dec["transforms"], compressed["transforms"])
    # Each decoded image is exactly what the real coding path gives for its chosen transform.
    for i, k in enumerate(compressed["transforms"].tolist()):
        direct = code(codec, dihedral.transform(images[i : i + 1], k))
        assert torch.equal(dec["x_hat"][i : i + 1], dihedral.inverse(direct.x_hat, k))
    coded = defense.code(images)
    assert isinstance(coded, SelfEnsembleCoded)
    assert torch.equal(coded.x_hat, dec["x_hat"])
    assert coded.encode_s > 0 and coded.decode_s > 0


@pytest.mark.parametrize("transforms,bits", [(list(range(8)), 3), ([0, 1, 2, 3], 2), ([0, 6], 1), ([0], 0)])
def test_self_ensemble_bpp_counts_codec_bits_plus_index_bits(codec, images, transforms, bits):
    defense = SelfEnsemble(codec, transforms)
    assert defense.index_bits == bits
    coded = defense.code(images)
    pixels = images.shape[-2] * images.shape[-1]
    for i, k in enumerate(coded.transforms.tolist()):
        direct = code(codec, dihedral.transform(images[i : i + 1], k))
        assert coded.bpp[i].item() == pytest.approx(direct.bpp[0].item() + bits / pixels, rel=0, abs=1e-12)
        assert coded.bpp_est[i].item() == pytest.approx(direct.bpp_est[0].item() + bits / pixels, rel=1e-5)


def test_self_ensemble_never_worse_than_identity(codec, images):
    plain = code(codec, images)
    coded = SelfEnsemble(codec).code(images)
    assert torch.all(mse_per_image(coded.x_hat, images) <= mse_per_image(plain.x_hat, images))
    assert psnr(coded.x_hat, images).min() > 10  # the (barely trained) codec works at all


def test_self_ensemble_forward_selects_best_candidate(codec, images):
    defense = SelfEnsemble(codec).eval()
    out = defense(images)
    assert out["x_hat"].shape == images.shape
    for i, k in enumerate(out["transforms"].tolist()):
        cand = forward_padded(codec, dihedral.transform(images[i : i + 1], k))
        assert torch.allclose(out["x_hat"][i : i + 1], dihedral.inverse(cand["x_hat"], k), atol=1e-6)
        plain = forward_padded(codec, images[i : i + 1])["x_hat"]
        assert mse_per_image(out["x_hat"][i : i + 1], images[i : i + 1]) <= mse_per_image(
            plain, images[i : i + 1]
        )
    # the likelihoods keep the codec's layout, so rate estimates stay per image
    ref = forward_padded(codec, images)["likelihoods"]
    assert {n: p.shape for n, p in out["likelihoods"].items()} == {n: p.shape for n, p in ref.items()}


# -- pre-processing --------------------------------------------------------------------------------


def test_resize_keeps_size_and_counts_bits_over_original_pixels(codec, images):
    defense = Resize(codec, factor=0.5)
    coded = defense.code(images)
    assert coded.x_hat.shape == images.shape
    assert torch.equal(coded.x_hat, to_8bit(coded.x_hat))
    small = to_8bit(defense.down(images))
    assert tuple(small.shape[-2:]) == (25, 35)
    direct = code(codec, small)
    assert torch.allclose(coded.bpp, direct.bpp / 4)
    assert torch.all(coded.bpp < code(codec, images).bpp)
    assert torch.all(psnr(coded.x_hat, images) > 10)


def test_bitdepth_keeps_size_and_is_sane(codec, images):
    defense = BitDepth(codec, bits=5)
    reduced = defense.reduce(images)
    assert len(torch.unique(reduced)) <= 32
    coded = defense.code(images)
    assert coded.x_hat.shape == images.shape
    assert torch.all(coded.bpp > 0) and torch.all(torch.isfinite(coded.bpp))
    assert torch.all(psnr(coded.x_hat, images) > 10)
    assert torch.equal(coded.x_hat, code(codec, reduced).x_hat)


def test_none_is_the_plain_codec(codec, images):
    coded, plain = NoDefense(codec).code(images), code(codec, images)
    assert torch.equal(coded.x_hat, plain.x_hat) and torch.equal(coded.bpp, plain.bpp)


# -- adaptive attack path --------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", DEFENSE_CFGS, ids=lambda c: str(list(c.values())))
def test_forward_gives_input_gradients_through_defense(codec, images, cfg):
    defense = build_defense(cfg, codec).eval()
    x = images.clone().requires_grad_(True)
    # eval-mode rounding alone gives exactly zero gradient: the attack must patch quantize
    defense(x)["x_hat"].sum().backward()
    assert x.grad is None or torch.count_nonzero(x.grad) == 0
    assert len(entropy_modules(defense)) == 2  # the attack engine finds the codec's entropy modules
    for proxy in ("ste", "noise"):
        with patched_quantize(defense, proxy):
            out = defense(x)
        assert out["x_hat"].shape == images.shape
        rate = sum(-torch.log(p).sum() for p in out["likelihoods"].values())
        (grad,) = torch.autograd.grad(((out["x_hat"] - images) ** 2).mean() + rate, x)
        assert torch.count_nonzero(grad) > 0, proxy
    assert "quantize" not in vars(entropy_modules(defense)[0])  # patch removed


@pytest.mark.parametrize("cfg", DEFENSE_CFGS[:2], ids=lambda c: c["name"])
def test_attack_surrogate_attacks_through_defense(codec, images, cfg):
    defense = build_defense(cfg, codec)
    x = images.clone().requires_grad_(True)
    with Surrogate(defense, "ste").active() as surrogate:
        out = surrogate(x)
    (grad,) = torch.autograd.grad(out["x_hat"].sum(), x)
    assert out["x_hat"].shape == images.shape and torch.count_nonzero(grad) > 0


# -- factory ---------------------------------------------------------------------------------------


def test_build_defense_from_hydra_configs(codec):
    assert isinstance(build_defense(None, codec), NoDefense)
    for name, cls in [
        ("none", NoDefense),
        ("self_ensemble", SelfEnsemble),
        ("resize", Resize),
        ("bitdepth", BitDepth),
    ]:
        cfg = OmegaConf.load(f"{CONF_DIR}/defense/{name}.yaml")
        defense = build_defense(cfg, codec)
        assert type(defense) is cls and defense.name == name
        assert defense.codec is codec and defense.description
        assert defense.config()["name"] == name
    rot = build_defense(OmegaConf.load(f"{CONF_DIR}/defense/self_ensemble_rot.yaml"), codec)
    assert rot.transforms == [0, 1, 2, 3] and rot.index_bits == 2
    with pytest.raises(DefenseError, match="choose one of"):
        build_defense({"name": "jpeg"}, codec)
    with pytest.raises(DefenseError, match=r"unknown setting\(s\) defense\.bits; defense=resize has"):
        build_defense({"name": "resize", "bits": 3}, codec)
    with pytest.raises(DefenseError):
        build_defense({"name": "self_ensemble", "transforms": [0, 0]}, codec)
    with pytest.raises(DefenseError, match=r"defense\.bits=9 must be in \[1, 8\]"):
        build_defense({"name": "bitdepth", "bits": 9}, codec)
    with pytest.raises(ConfigError, match=r"defense\.factor=2 must be in \(0, 1\]"):
        Resize(codec, factor=2)  # from Python: the options' own check
