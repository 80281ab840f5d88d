"""attack=bitrate: added as one file + one YAML through the registry; measured by the real coder."""

from __future__ import annotations

import pytest
import torch
from conftest import photo
from omegaconf import OmegaConf

from robust_nic.attacks import build_attack
from robust_nic.coding import code
from robust_nic.config import compose_config


def bitrate_attack(**overrides):
    cfg = OmegaConf.to_container(compose_config("evaluate", ["attack=bitrate"]).attack, resolve=True)
    return build_attack(cfg | {"steps": 20, "seed": 0} | overrides)


@pytest.fixture(scope="module")
def images():
    x = torch.from_numpy(photo("coffee.png")[100:196, 200:328].copy()).permute(2, 0, 1).float() / 255
    y = torch.from_numpy(photo("chelsea.png")[50:146, 100:228].copy()).permute(2, 0, 1).float() / 255
    return torch.stack([x, y])


def test_bitrate_attack_inflates_the_real_bitstream_and_stops_at_the_target(small_codec, images):
    # A large budget (rms 0.1, 20 dB): this small codec's rate barely moves at eps 0.01 (+1.5-2 % measured).
    clean = code(small_codec, images).bpp
    free = bitrate_attack(eps=0.1)
    assert free.name == "bitrate" and free.proxy == "ste"
    result = free.run(small_codec, images)
    x_free = result.x_adv
    assert free.budget.within(images, x_free).all()
    free_bpp = code(small_codec, x_free).bpp
    assert (free_bpp > 1.1 * clean).all(), (clean, free_bpp)  # the real bitstream grows

    # A target (on the entropy model's estimate, which the hinge sees) half of the first image's gain
    # below where the free attack took it: the hinge stops it there; the second image never reaches the
    # target, so it is pushed as far as without one.
    target = float(result.score[0] - 0.5 * (free_bpp[0] - clean[0]))
    assert result.score[1] < target
    hinge_bpp = code(small_codec, bitrate_attack(eps=0.1, target_bpp=target)(small_codec, images)).bpp
    assert clean[0] < hinge_bpp[0] < free_bpp[0] - 0.25 * (free_bpp[0] - clean[0]), (target, hinge_bpp)
    assert hinge_bpp[1] == pytest.approx(float(free_bpp[1]), rel=0.02)


def test_bitrate_attack_needs_likelihoods():
    with pytest.raises(ValueError, match="attack.proxy"):
        bitrate_attack(proxy="skip")
