"""Settings that would run but mean nothing are refused before any work, naming the key."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config

from robust_nic.codecs import build_codec
from robust_nic.config import ConfigError, codec_from_settings, resolve


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["attack=pgd", "attack.eps=100"], "attack.eps=100"),
        (["attack=pgd", "attack.eps=0"], "attack.eps=0"),
        (["attack=pgd", "attack.eps=-0.01"], "attack.eps=-0.01"),
        (["attack=pgd", "attack.eps=[0.01,4]"], "attack.eps=4"),
        (["attack=pgd", "attack.norm=linf", "attack.eps=4"], "attack.eps=4"),
        (["attack=pgd", "attack.linf=16"], "attack.linf=16"),
        (["attack=pgd", "max_images=0"], "max_images=0"),
        (["attack=pgd", "max_images=-1"], "max_images=-1"),
    ],
)
def test_evaluation_settings_out_of_range_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        resolve(compose_config("evaluate", overrides))


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["attack.eps=0.01", "train.adv_ratio=1.5"], "train.adv_ratio=1.5"),
        (["attack.eps=0.01", "train.adv_ratio=-0.5"], "train.adv_ratio=-0.5"),
        (["data.batch_size=0"], "data.batch_size=0"),
        (["attack.eps=100"], "attack.eps=100"),
    ],
)
def test_training_settings_out_of_range_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=key):
        resolve(compose_config("train", overrides))


def test_sane_settings_pass():
    settings = resolve(compose_config("evaluate", ["attack=pgd", "attack.eps=[0.0025,0.01,0.2]", "max_images=1"]))
    assert settings["attack"]["eps"] == [0.0025, 0.01, 0.2]
    settings = resolve(compose_config("train", ["attack.eps=0.01", "train.adv_ratio=0.5"]))
    assert settings["train"]["adv_ratio"] == 0.5


def test_checkpoint_channels_are_recorded_in_the_settings(tmp_path):
    """A state dict of other channel sizes loaded into model=tiny: the settings (saved as config.yaml)
    name the channels that were really built, not the config's 64/96."""
    torch.manual_seed(0)
    path = tmp_path / "other.pth.tar"
    other = build_codec("bmshj2018-hyperprior", 3, channels=[16, 24])
    other.update(force=True)
    torch.save(other.state_dict(), path)
    settings = resolve(compose_config("evaluate", [f"model.checkpoint={path}"]))
    assert settings["model"]["channels"] == [64, 96]
    codec = codec_from_settings(settings)
    assert settings["model"]["channels"] == [16, 24]
    assert codec.g_a[0].out_channels == 16
