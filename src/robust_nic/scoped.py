"""Changes to an object that last one block and are undone exactly, whatever the block raises.

`patched(obj, name, value)`: `obj.name = value` inside the block; afterwards the instance holds what it
held before (its own attribute back, or none at all, so the class attribute shows through again). Patches
nest: an inner one wraps what an outer one installed and hands it back on exit.
`eval_mode(module)`: eval() inside the block; every submodule's own train/eval flag comes back after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

__all__ = ["eval_mode", "patched"]

_ABSENT = object()


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    """`obj.name = value` for the block (a plain instance attribute: a method, a function, a value)."""
    before = vars(obj).get(name, _ABSENT)  # only the instance's own attribute, never the class's
    setattr(obj, name, value)
    try:
        yield
    finally:
        if before is _ABSENT:
            vars(obj).pop(name, None)
        else:
            setattr(obj, name, before)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block; every submodule's own train/eval flag is restored afterwards.

    Parameters, their requires_grad flags and .grad are never touched: attacks take input gradients
    with torch.autograd.grad, which does not accumulate into parameter .grad.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
