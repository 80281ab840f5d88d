"""Build an Attack from the Hydra `attack` group, so evaluation and finetuning call the same thing."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import torch

from robust_nic.attacks.attack import Attack, AttackConfigError
from robust_nic.attacks.budget import Budget
from robust_nic.attacks.objectives import Objective, ObjectiveError
from robust_nic.attacks.optimizers import OPTIMIZERS, defaults, knobs, load_optimizers
from robust_nic.attacks.suite import AttackSuite
from robust_nic.registry import RegistryError
from robust_nic.settings import AttackSettings, ConfigError, split_attack

log = logging.getLogger(__name__)

# attack.* keys shared by every optimiser (robust_nic.settings.AttackSettings); each optimiser adds its own
# (optimizers.knobs()).
SHARED_KEYS = tuple(f.name for f in dataclasses.fields(AttackSettings))
# Keys of attack=auto (training) and of suites, not of one attack (read where they are used).
OTHER_KEYS = ("use", "members")


def _plain(cfg: Mapping) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        pass
    return dict(cfg)


def _eps(value) -> float | torch.Tensor:
    """A float, or one eps per image (a list)."""
    return torch.tensor(value, dtype=torch.float32) if isinstance(value, (list, tuple)) else float(value)


def with_defaults(cfg: Mapping | None) -> dict | None:
    """The `attack` settings with each null option of the chosen optimiser replaced by its default, so that
    the run's saved config says what ran (attack.steps: 1001, not null)."""
    if not cfg:
        return cfg
    cfg = _plain(cfg)
    name = cfg.get("name")
    if name in (None, "none", "auto") or name not in load_optimizers():
        return cfg
    return cfg | {k: v for k, v in defaults(name).items() if cfg.get(k) is None}


def variant(cfg: Mapping, overrides: Mapping) -> dict:
    """`cfg` with `overrides` (e.g. finetuning's train.val_attack). When they name another optimiser, the
    first optimiser's own options that the new one lacks are dropped (they describe the other one)."""
    cfg = _plain(cfg)
    merged = cfg | dict(overrides)
    name = merged.get("name")
    if name != cfg.get("name") and name in load_optimizers():
        entry = OPTIMIZERS.get(name)
        own = {f.name for f in dataclasses.fields(entry.options)} if entry.options else set()
        merged = {k: v for k, v in merged.items() if k not in knobs() - own or k in overrides}
    return merged


def build_attack(cfg: Mapping | None) -> Attack | AttackSuite | None:
    """An Attack from the `attack` config dict; None for no config or `name: none` (no attack).

    The shared keys become AttackSettings, the optimiser's own keys its options dataclass (null = its
    default); a key no optimiser has is an error naming it, another optimiser's option a warning (it is
    ignored)."""
    if not cfg:
        return None
    cfg = _plain(cfg)
    if cfg.get("name", "none") in (None, "none"):
        return None
    if cfg.get("members"):
        return build_suite(cfg)
    if isinstance(cfg.get("eps"), torch.Tensor):  # one eps per image, from Python
        cfg["eps"] = cfg["eps"].tolist()
    try:
        settings, rest = split_attack(cfg)
    except ConfigError as err:
        raise AttackConfigError(str(err)) from err
    return attack_from_settings(settings, rest)


def attack_from_settings(settings: AttackSettings, rest: Mapping) -> Attack:
    """The Attack of `settings` with the optimiser's options from `rest` (the group's other keys)."""
    name = settings.name
    try:
        entry = load_optimizers().get(name)
    except RegistryError as err:
        raise AttackConfigError(f"{err} (or none), as attack.name / attack=NAME") from err
    own = {f.name for f in dataclasses.fields(entry.options)} if entry.options else set()
    unknown = sorted(set(rest) - set(OTHER_KEYS) - knobs())
    if unknown:
        raise AttackConfigError(
            f"attack={name} has no option(s) {[f'attack.{k}' for k in unknown]}; its own options: {sorted(own)}, "
            f"shared: {sorted(SHARED_KEYS)}"
        )
    foreign = sorted(k for k in knobs() - own if rest.get(k) is not None)
    if foreign:
        # Another optimiser's option (a sweep over attack=pgd,noise with attack.steps=N): said, not fatal.
        log.warning("attack=%s ignores %s (options of other optimisers); its own: %s",
                    name, [f"attack.{k}={rest[k]}" for k in foreign], sorted(own))  # fmt: skip
    try:
        budget = Budget(norm=settings.norm, eps=_eps(settings.eps), linf=settings.linf)
        objective = Objective(
            kind=settings.objective,
            reference=settings.reference,
            distance=settings.distance,
            target_bpp=settings.target_bpp,
        )
        options = OPTIMIZERS.options(name, {k: rest.get(k) for k in own}, ignore=())
    except (ValueError, ObjectiveError) as err:
        raise AttackConfigError(str(err)) from err
    return Attack(
        name=name,
        budget=budget,
        objective=objective,
        proxy=settings.proxy,
        options=options,
        restarts=settings.restarts,
        seed=settings.seed,
        progress=settings.progress,
        warmup_steps=settings.warmup_steps,
        select=settings.select,
    )


def build_suite(cfg: dict) -> AttackSuite:
    """`attack.members`: name -> the keys in which that member differs from the suite's `attack.*`."""
    # A suite-level option set on the command line (attack.steps=50) applies to every member that has it.
    shared = {k: v for k, v in cfg.items() if k not in ("members", "name") and (k not in knobs() or v is not None)}
    members = {}
    for label, member in cfg["members"].items():
        if not member or not member.get("name"):
            raise AttackConfigError(f"attack.members.{label} needs a name (an attack optimiser, e.g. pgd)")
        members[label] = build_attack(with_defaults(shared | dict(member)))
    if not members:
        raise AttackConfigError(f"attack={cfg['name']} has no members")
    return AttackSuite(str(cfg["name"]), members)
