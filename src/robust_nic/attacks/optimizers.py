"""The registry of attack optimisers: one file each, registered with its own options dataclass.

    @dataclass(frozen=True)
    class MyOptions:
        steps: int = 100

    @OPTIMIZERS.register("my_attack", options=MyOptions)
    def my_attack(problem: Problem, options: MyOptions, progress: bool) -> tuple[x_adv, score]: ...

plus `conf/attack/my_attack.yaml` (`defaults: [base]`, `name: my_attack` and what differs from the base).
The module is listed in OPTIMIZER_MODULES. Budget, objective, proxy, restarts and seed are shared by every
optimiser (robust_nic.attacks.attack.Attack); `gradient_free` optimisers get `(x, budget, draws)`.
"""

from __future__ import annotations

import dataclasses
import importlib

from robust_nic.registry import Registry

OPTIMIZERS = Registry("attack")
OPTIMIZER_MODULES = ("chen2023", "iterative", "noise", "bitrate")


def load_optimizers() -> Registry:
    for module in OPTIMIZER_MODULES:
        importlib.import_module(f"robust_nic.attacks.{module}")
    return OPTIMIZERS


def knobs() -> set[str]:
    """Every optimiser's own config keys (attack.steps, attack.lr, ...)."""
    names = set()
    for name in load_optimizers().names():
        options = OPTIMIZERS.get(name).options
        names |= {f.name for f in dataclasses.fields(options)} if options else set()
    return names


def defaults(name: str) -> dict:
    """The optimiser's own keys with their default values (what a null in the config means)."""
    options = load_optimizers().get(name).options
    return dataclasses.asdict(options()) if options else {}
