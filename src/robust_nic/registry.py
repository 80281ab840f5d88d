"""Name -> implementation registries (attacks, defenses, studies, codecs), filled by decorators.

    STUDIES = Registry("study")

    @STUDIES.register("noise", options=NoiseOptions)
    def run_noise(cfg, run_dir): ...

Each entry may declare a typed options dataclass: `registry.options(name, cfg)` turns the Hydra group's
keys into it through settings.typed (the one reader of every settings group), refusing unknown keys and
bad values with the config key to change (`study.mse`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from robust_nic.settings import ConfigError, typed


class RegistryError(ConfigError):
    """An unknown name, an unknown option or a value of the wrong type; the message says what is allowed."""


@dataclass(frozen=True)
class Entry:
    name: str
    target: object  # the registered class or function
    options: type | None  # a dataclass of the entry's own config keys, or None (no keys)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # the config group, used in messages: `study`, `defense`, `attack`
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, options: type | None = None) -> Callable:
        """Decorator: `@REGISTRY.register("name", options=Options)` above a class or function."""

        def decorate(target):
            if name in self._entries and self._entries[name].target is not target:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, target, options)
            return target

        return decorate

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise RegistryError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._entries[name]

    def options(self, name: str, cfg: Mapping | None, ignore: tuple[str, ...] = ("name",)):
        """The entry's options dataclass filled from `cfg` (missing keys keep their defaults), read by
        settings.typed like every settings group."""
        entry = self.get(name)
        given = {k: v for k, v in dict(cfg or {}).items() if k not in ignore}
        if entry.options is None:
            if given:
                raise RegistryError(f"{self.kind} {name!r} takes no options; remove {self._keys(given)}")
            return None
        return typed(entry.options, self.kind, given, owner=f"{self.kind}={name}")

    def _keys(self, keys) -> list[str]:
        return [f"{self.kind}.{k}" for k in sorted(keys)]

