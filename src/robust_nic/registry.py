"""Name -> implementation registries (attacks, defenses, studies, codecs), filled by decorators.

    STUDIES = Registry("study")

    @STUDIES.register("noise", options=NoiseOptions)
    def run_noise(cfg, run_dir): ...

Each entry may declare a typed options dataclass: `registry.options(name, cfg)` turns the Hydra group's
keys into it, converting by the field types and refusing unknown keys and bad values with the config key
to change (`study.mse`), so a config group's validation derives from one declaration.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from robust_nic.settings import ConfigError, convert


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
        """The entry's options dataclass filled from `cfg` (missing keys keep their defaults, None too)."""
        entry = self.get(name)
        given = {k: v for k, v in dict(cfg or {}).items() if k not in ignore}
        if entry.options is None:
            if given:
                raise RegistryError(f"{self.kind} {name!r} takes no options; remove {self._keys(given)}")
            return None
        return build_options(entry.options, given, f"{self.kind}", f"{self.kind} {name!r}")

    def _keys(self, keys) -> list[str]:
        return [f"{self.kind}.{k}" for k in sorted(keys)]


def build_options(cls: type, given: Mapping, prefix: str, owner: str):
    """`cls(**given)` with every value converted to its field's type; errors name `prefix.KEY`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise RegistryError(
            f"{owner} has no option(s) {[f'{prefix}.{k}' for k in unknown]}; its options: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in given.items():
        if value is None:
            continue  # None = the default
        try:
            kwargs[key] = convert(value, hints[key])
        except (TypeError, ValueError) as err:
            raise RegistryError(f"{owner}: bad {prefix}.{key}={value!r} ({err})") from err
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise RegistryError(f"{owner}: {err}") from err
