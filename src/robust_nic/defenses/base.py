"""What every defense offers: real coding, a differentiable forward for adaptive attacks, a name."""

from __future__ import annotations

from compressai.models import CompressionModel
from torch import Tensor, nn

from robust_nic.coding import Coded, code, forward_padded
from robust_nic.registry import Registry

# name -> Defense subclass, with its options dataclass (the keys of conf/defense/<name>.yaml).
DEFENSES = Registry("defense")


class Defense(nn.Module):
    """A codec wrapped with a defense.

    - `code(x)`: the real coding path (8-bit input, entropy-coded bitstream, side information counted in
      bpp) returning a `robust_nic.coding.Coded`.
    - `forward(x)`: differentiable proxy `{"x_hat", "likelihoods"}` through the codec's own forward, so an
      attack that patches the `quantize` of the entropy modules under `named_modules()` attacks through
      the defense (adaptive attack).
    The codec is the submodule `codec`; train()/eval() reach it.
    """

    name: str = "none"
    pads_input = True  # forward takes any image size; robust_nic.coding.forward_padded calls it directly

    def __init__(self, codec: CompressionModel):
        super().__init__()
        self.codec = codec

    @property
    def description(self) -> str:
        return "no defense"

    def config(self) -> dict:
        """The knobs, as a plain dict (for reports and result files)."""
        return {"name": self.name}

    def forward(self, x: Tensor) -> dict:
        return forward_padded(self.codec, x)

    def code(self, x: Tensor, update: bool = False) -> Coded:
        return code(self.codec, x, update=update)

    def extra_repr(self) -> str:
        return self.description


@DEFENSES.register("none")
class NoDefense(Defense):
    """The codec as is, so that evaluation runs one code path with or without a defense."""
