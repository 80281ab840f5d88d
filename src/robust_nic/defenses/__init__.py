"""Defenses: a codec wrapped so that evaluation codes through it and adaptive attacks attack through it.

from robust_nic.defenses import build_defense
defense = build_defense({"name": "self_ensemble", "transforms": [0, 1, 2, 3]}, codec)
coded = defense.code(x)      # real bitstream, side information in bpp
out = defense(x)             # differentiable proxy {"x_hat", "likelihoods"}
"""

from __future__ import annotations

from collections.abc import Mapping

from compressai.models import CompressionModel

from robust_nic.defenses import container, dihedral
from robust_nic.defenses.base import Defense, NoDefense
from robust_nic.defenses.preprocess import BitDepth, Resize
from robust_nic.defenses.self_ensemble import SelfEnsemble, SelfEnsembleCoded

DEFENSES: dict[str, type[Defense]] = {
    "none": NoDefense,
    "self_ensemble": SelfEnsemble,
    "resize": Resize,
    "bitdepth": BitDepth,
}

# The knobs each defense takes from its Hydra group (conf/defense/<name>.yaml).
KNOBS = {
    "none": {},
    "self_ensemble": {"transforms": lambda v: [int(k) for k in v]},
    "resize": {"factor": float, "antialias": bool},
    "bitdepth": {"bits": int},
}


class DefenseError(ValueError):
    """A defense config that cannot be built; the message says what is allowed."""


def build_defense(cfg: Mapping | None, codec: CompressionModel) -> Defense:
    """The defense named by `cfg["name"]` (none|self_ensemble|resize|bitdepth) around `codec`.

    `cfg` is the Hydra `defense` group (a DictConfig works) or None for no defense. Unknown names and
    knobs are errors, not silently ignored.
    """
    cfg = dict(cfg or {"name": "none"})
    name = cfg.pop("name", "none") or "none"
    if name not in DEFENSES:
        raise DefenseError(f"unknown defense {name!r}; choose one of {sorted(DEFENSES)}")
    unknown = sorted(set(cfg) - set(KNOBS[name]))
    if unknown:
        raise DefenseError(f"defense {name!r} has no option(s) {unknown}; its options: {sorted(KNOBS[name])}")
    kwargs = {}
    for key, value in cfg.items():
        if value is None:
            continue
        try:
            kwargs[key] = KNOBS[name][key](value)
        except (TypeError, ValueError) as err:
            raise DefenseError(f"defense {name!r}: bad {key}={value!r}: {err}") from err
    try:
        return DEFENSES[name](codec, **kwargs)
    except ValueError as err:
        raise DefenseError(str(err)) from err


__all__ = [
    "DEFENSES",
    "BitDepth",
    "Defense",
    "DefenseError",
    "NoDefense",
    "Resize",
    "SelfEnsemble",
    "SelfEnsembleCoded",
    "build_defense",
    "container",
    "dihedral",
]
