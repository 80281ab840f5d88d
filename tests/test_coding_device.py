"""coding.device: codecs with a context model entropy-code on a CPU copy (auto), refreshed whenever the
codec's weights change; on a CPU-only machine nothing moves."""

from __future__ import annotations

import pytest
import torch
from compressai.models import JointAutoregressiveHierarchicalPriors, ScaleHyperprior
from conftest import photo

from robust_nic.coding import code
from robust_nic.coding_device import CodingDeviceError, CpuCopies, coding_device, set_coding_device

CUDA = torch.device("cuda")  # only named: no accelerator is needed to decide where coding runs


def image() -> torch.Tensor:
    return torch.from_numpy(photo("coffee.png")[:64, :64].copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture
def codecs():
    torch.manual_seed(0)
    return JointAutoregressiveHierarchicalPriors(8, 8).eval(), ScaleHyperprior(8, 8).eval()


def test_context_models_code_on_the_cpu_with_auto(codecs):
    context, hyperprior = codecs
    assert coding_device(context, CUDA, "auto") == torch.device("cpu")
    assert coding_device(hyperprior, CUDA, "auto") == CUDA
    assert coding_device(hyperprior, CUDA, "cpu") == torch.device("cpu")
    assert coding_device(context, CUDA, "same") == CUDA
    cpu = torch.device("cpu")
    assert all(coding_device(c, cpu, s) == cpu for c in codecs for s in ("auto", "cpu", "same"))
    with pytest.raises(CodingDeviceError, match="coding.device='gpu': choose one of auto, cpu, same"):
        set_coding_device("gpu")


def test_the_cpu_copy_is_refreshed_whenever_the_weights_change(codecs):
    codec = codecs[0]
    copies = CpuCopies()
    first = copies.get(codec)
    assert first is not codec and copies.get(codec) is first  # unchanged weights: the same copy
    x = image()
    assert code(first, x, update=True).strings == code(codec, x, update=True).strings

    optimizer = torch.optim.SGD(codec.parameters(), lr=0.1)
    codec.train()
    out = codec(x)
    (sum(p.log().sum() for p in out["likelihoods"].values()) + (out["x_hat"] - x).pow(2).sum()).backward()
    optimizer.step()  # a training step, as between two validations
    codec.eval()
    refreshed = copies.get(codec)
    assert refreshed is not first
    assert all(torch.equal(a, b) for a, b in zip(refreshed.state_dict().values(), codec.state_dict().values(),
                                                  strict=True))  # fmt: skip
    assert code(refreshed, x, update=True).strings == code(codec, x, update=True).strings

    codec.load_state_dict(first.state_dict())  # weights loaded back: refreshed again
    assert copies.get(codec) is not refreshed
