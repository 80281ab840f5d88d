"""Typed settings: each config group's dataclass is the one home of its keys, defaults, types and ranges.

`typed(cls, group, values)` turns a group's composed values into its dataclass, refusing an unknown key,
a value of the wrong type or out of range with one ConfigError naming `group.key`. The groups whose
defaults live here are stored in Hydra's ConfigStore as `schema/<group>` (plain nodes made from the
dataclasses' defaults, so our own errors, not OmegaConf's, report a bad value); the YAMLs extend them.
This module stays light (no torch): Hydra's config package imports it before composing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(ValueError):
    """A setting that is unknown, of the wrong type, out of range or contradicts another; the message
    names the key and what to choose instead (the command line shows it as one line, exit status 2)."""


def convert(value, hint):
    """`value` as the annotated type: int, float, bool, str, list[...]/tuple[...] of them, X | None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        errors = []
        for option in options:
            try:
                return convert(value, option)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        item = args[0] if args else typing.Any
        items = [convert(v, item) for v in value]
        return items if origin is list else tuple(items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        if hint is int and float(value) != int(value):
            raise ValueError(f"expected a whole number, got {value}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"expected text, got {type(value).__name__}")
        return value
    return value


def typed(cls, group: str, values: Mapping | None):
    """`values` (a config group) as its settings dataclass: missing keys take the dataclass's defaults,
    a null keeps null where the type allows it and takes the default otherwise; unknown keys and values of
    the wrong type are refused naming `group.key` (ranges: the dataclass's __post_init__)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(values or {})
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(f'{group}.{k}' for k in unknown)}; {group} has {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if value is None and not allows_none(hints[key]) and has_default(fields[key]):
            continue
        try:
            kwargs[key] = convert(value, hints[key])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{group}.{key}={value!r} is not a valid setting ({err})") from err
    try:
        return cls(**kwargs)
    except TypeError as err:  # a key without default left unset
        raise ConfigError(f"{group}: {err}") from err


def allows_none(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def plain(settings) -> dict:
    """A settings dataclass as the plain dict a saved config or checkpoint holds (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


def check_range(
    group: str, key: str, value, low=None, high=None, low_open: bool = False, why: str = ""
) -> None:
    """`low <= value <= high` (`low < value` with low_open), else a ConfigError naming `group.key`."""
    if value is None:
        return
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        span = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{group}.{key}={value} must be in {span}{why}")


def check_choice(group: str, key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{group}.{key}={value} is unknown; choose {' | '.join(map(str, choices))}")


# The attack group's allowed values (the attack modules check the same lists on their Python objects).
NORMS = ("rms", "linf")
OBJECTIVES = ("distortion", "targeted", "rate")
REFERENCES = ("recon", "source")
DISTANCES = ("mse", "ms_ssim")
PROXIES = ("skip", "noise", "ste", "none")
SELECT = ("best", "last")  # which iterate an attack returns (robust_nic.attacks.engine.iterate)
# Largest meaningful budget per norm ([0,1] units): an RMS of 0.25 is an input PSNR of 12 dB, and an
# L-inf step of 0.5 moves mid-grey to black or white; beyond these nothing is "imperceptible".
EPS_MAX = {"rms": 0.25, "linf": 0.5}


@dataclass(frozen=True)
class AttackSettings:
    """The `attack` keys every optimiser shares (each optimiser adds its own options dataclass,
    robust_nic.attacks.optimizers; `use` and `members` belong to attack=auto and suites)."""

    name: str = "none"
    norm: str = "rms"  # rms: sqrt(MSE(x, x_adv)) <= eps per image ([0,1] scale; 0.01 = MSE 1e-4, 40 dB); linf
    eps: float | list[float] | None = 0.01  # one budget, or one per image
    linf: float | None = None  # optional extra L-inf box on the perturbation (paper: 0.0627 = 16/255)
    objective: str = "distortion"  # distortion | targeted | rate
    reference: str = "recon"  # distortion vs the clean reconstruction (paper) or the source
    distance: str = "mse"  # mse | ms_ssim
    target_bpp: float | None = None  # rate objective: null = maximise bpp, else push bpp_est towards it
    target_image: str | None = None  # targeted objective: the image to look like (null: the next test image)
    restarts: int = 1  # keep each image's strongest of several runs
    seed: int | None = 0  # random starts and noise; null = unseeded
    progress: bool = False  # tqdm bar over the steps
    warmup_steps: int = 0  # finetuning: eps ramps up linearly over this many training steps
    select: str = "best"  # best: each image's strongest iterate; last: the final one, unscored (finetuning)
    proxy: str = "skip"  # skip = g_s(g_a(x)) (paper) | ste | noise | none (no gradient: an error)

    def __post_init__(self):
        for key, choices in (("norm", NORMS), ("objective", OBJECTIVES), ("reference", REFERENCES),
                             ("distance", DISTANCES), ("proxy", PROXIES), ("select", SELECT)):  # fmt: skip
            check_choice("attack", key, getattr(self, key), choices)
        if self.name not in ("none", "auto") and self.eps is None:
            raise ConfigError(
                f"attack.eps=null: attack={self.name} needs a budget, e.g. attack.eps=0.01 (or attack=none)"
            )
        if self.name != "none" and self.eps is not None:
            high = EPS_MAX[self.norm]
            for value in self.eps if isinstance(self.eps, list) else [self.eps]:
                check_range("attack", "eps", value, 0, high, low_open=True, why=(
                    f" for attack.norm={self.norm}: eps is in [0,1] pixel units (rms 0.01 = the paper's MSE 1e-4, "
                    "40 dB; linf 4/255 = 0.0157); for no attack use attack=none"))  # fmt: skip
        check_range(
            "attack",
            "linf",
            self.linf,
            0,
            1,
            low_open=True,
            why=" ([0,1] pixel units, 16/255 = 0.0627) or null",
        )
        check_range("attack", "target_bpp", self.target_bpp, 0)
        check_range("attack", "restarts", self.restarts, 1)
        check_range("attack", "warmup_steps", self.warmup_steps, 0)


def split_attack(cfg: Mapping) -> tuple[AttackSettings, dict]:
    """The `attack` group as its shared settings and the rest (the optimiser's options, `use`, `members`)."""
    shared = {f.name for f in dataclasses.fields(AttackSettings)}
    return typed(AttackSettings, "attack", {k: v for k, v in cfg.items() if k in shared}), {
        k: v for k, v in cfg.items() if k not in shared
    }


SCHEMAS = {"attack": AttackSettings}  # config group -> the dataclass holding its defaults


def store_schemas() -> None:
    """Each group's defaults as the config `schema/<group>` in Hydra's ConfigStore, which the group's YAMLs
    extend (`defaults: [/schema/<group>@_here_, _self_]`): plain nodes, so the values are typed here."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, cls in SCHEMAS.items():
        store.store(group="schema", name=group, node=plain(cls()))
