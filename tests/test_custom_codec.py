"""A codec from outside CompressAI's zoo, registered by the user's own module (model.module), is trained,
attacked, evaluated and exported like the zoo ones."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
from conftest import FAST, compose_config

from robust_nic.codecs import CodecError, load_codec_checkpoint
from robust_nic.evaluation.runner import evaluate
from robust_nic.training import train

USER_MODULE = '''
    from compressai.entropy_models import EntropyBottleneck
    from compressai.layers import GDN
    from compressai.models import CompressionModel
    from torch import nn

    from robust_nic.codecs import register_codec


    @register_codec("two-layer-factorized", configs={q: (32, 48) for q in range(1, 9)})
    class TwoLayerFactorized(CompressionModel):
        """A user's own codec: two convolutions each way, a factorized entropy model."""

        def __init__(self, N, M):
            super().__init__()
            self.N, self.M = N, M
            self.entropy_bottleneck = EntropyBottleneck(M)
            self.g_a = nn.Sequential(nn.Conv2d(3, N, 5, 2, 2), GDN(N), nn.Conv2d(N, M, 5, 2, 2))
            self.g_s = nn.Sequential(nn.ConvTranspose2d(M, N, 5, 2, 2, 1), GDN(N, inverse=True),
                                     nn.ConvTranspose2d(N, 3, 5, 2, 2, 1))

        def forward(self, x):
            y_hat, likelihoods = self.entropy_bottleneck(self.g_a(x))
            return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": likelihoods}}

        def compress(self, x):
            y = self.g_a(x)
            return {"strings": [self.entropy_bottleneck.compress(y)], "shape": y.size()[-2:]}

        def decompress(self, strings, shape):
            return {"x_hat": self.g_s(self.entropy_bottleneck.decompress(strings[0], shape)).clamp_(0, 1)}

        @classmethod
        def from_state_dict(cls, state_dict):
            codec = cls(state_dict["g_a.0.weight"].size(0), state_dict["g_a.2.weight"].size(0))
            codec.load_state_dict(state_dict)
            return codec
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_codecs.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_codecs"
    sys.modules.pop("my_codecs", None)


def test_a_registered_codec_trains_evaluates_attacks_and_exports(user_module, tmp_path, photo_dir):
    codec_args = ["model.arch=two-layer-factorized", f"model.module={user_module}", "model.channels=null"]
    run_dir = tmp_path / "train"
    train(compose_config("train", [*FAST, f"data.root={photo_dir}", *codec_args]), run_dir)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()

    eval_dir = tmp_path / "eval"
    cfg = compose_config("evaluate", [f"model.checkpoint={checkpoint}", *codec_args, "data=folder",
                                      f"data.root={photo_dir}", "device=cpu", "attack=pgd", "attack.steps=2",
                                      "eval.allow_training_images=true",  # trained on the same folder
                                      "max_images=1", "save_images=false"])  # fmt: skip
    metrics = evaluate(cfg, eval_dir)
    assert 0 < metrics["test/clean/bpp"] < math.inf and math.isfinite(metrics["test/clean/psnr"])  # 4 batches: high bpp
    assert 40 - 1e-6 <= metrics["test/adv/psnr_in"] < 50 and math.isfinite(metrics["test/adv/delta_psnr"])
    exported = load_codec_checkpoint("two-layer-factorized", eval_dir / "codec.pth.tar")
    assert type(exported).__name__ == "TwoLayerFactorized" and exported.M == 48


def test_unregistered_or_unimportable_codecs_say_what_to_do():
    with pytest.raises(CodecError, match=r"unknown codec architecture.*'my-unregistered'.*register_codec"):
        compose_and_resolve(["model.arch=my-unregistered"])
    with pytest.raises(CodecError, match="model.module=no_such_module cannot be imported"):
        compose_and_resolve(["model.arch=my-unregistered", "model.module=no_such_module"])


def compose_and_resolve(overrides):
    from robust_nic.config import resolve

    return resolve(compose_config("train", overrides))


def test_zoo_architectures_come_through_the_registry():
    from compressai.zoo import image as zoo_image

    from robust_nic.codecs import CODECS, codec_class, qualities

    assert set(zoo_image.model_architectures) <= set(CODECS.names())
    assert codec_class("mbt2018") is zoo_image.model_architectures["mbt2018"]
    assert qualities("cheng2020-anchor") == [1, 2, 3, 4, 5, 6]
