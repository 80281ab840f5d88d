"""Defenses: a codec wrapped so that evaluation codes through it and adaptive attacks attack through it.

from robust_nic.defenses import build_defense
defense = build_defense({"name": "self_ensemble", "transforms": [0, 1, 2, 3]}, codec)
coded = defense.code(x)      # real bitstream, side information in bpp
out = defense(x)             # differentiable proxy {"x_hat", "likelihoods"}
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping

from compressai.models import CompressionModel

from robust_nic.defenses import container, dihedral
from robust_nic.defenses.base import DEFENSES, Defense, NoDefense
from robust_nic.defenses.preprocess import BitDepth, Resize
from robust_nic.defenses.self_ensemble import SelfEnsemble, SelfEnsembleCoded
from robust_nic.settings import ConfigError

# Modules that register defenses with `@DEFENSES.register(...)`: a new defense is one more file here
# plus conf/defense/<name>.yaml.
DEFENSE_MODULES = ("base", "preprocess", "self_ensemble", "latent_range")


class DefenseError(ConfigError):
    """A defense config that cannot be built; the message says what is allowed."""


def check_defense(cfg: Mapping | None):
    """The typed options of the defense `cfg` names (None: no defense, or one without options).

    Unknown names and keys, values out of range and a latent-range file that is not there are refused
    here, naming the key, so the evaluation setup checks the defense before any work.
    """
    for module in DEFENSE_MODULES:
        importlib.import_module(f"robust_nic.defenses.{module}")
    cfg = dict(cfg or {"name": "none"})
    try:
        return DEFENSES.options(cfg.get("name") or "none", cfg)
    except ConfigError as err:
        raise DefenseError(str(err)) from err


def build_defense(cfg: Mapping | None, codec: CompressionModel) -> Defense:
    """The defense named by `cfg["name"]` around `codec`, its options from the rest of `cfg`.

    `cfg` is the Hydra `defense` group (a DictConfig works) or None for no defense. Unknown names and
    options are errors, not silently ignored.
    """
    options = check_defense(cfg)
    entry = DEFENSES.get(dict(cfg or {}).get("name") or "none")
    kwargs = dataclasses.asdict(options) if options is not None else {}
    try:
        return entry.target(codec, **kwargs)
    except ValueError as err:  # what needs the codec: a ranges file for other latent channels
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
    "check_defense",
    "container",
    "dihedral",
]
