"""Registries: decorator registration, options derived from a dataclass, errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from robust_nic.config import ConfigError
from robust_nic.registry import Registry, RegistryError
from robust_nic.studies import load_studies, run_study


@dataclass(frozen=True)
class Knobs:
    steps: int = 3
    scale: float = 1.0
    names: list[str] = field(default_factory=list)
    label: str | None = None
    flag: bool = False


def test_register_and_build_options():
    things = Registry("thing")

    @things.register("a", options=Knobs)
    def make_a():
        return "a"

    assert things.names() == ["a"] and things.get("a").target is make_a
    options = things.options("a", {"name": "a", "steps": 5, "scale": 2, "names": ("x", "y"), "label": None})
    assert options == Knobs(steps=5, scale=2.0, names=["x", "y"], label=None)
    assert isinstance(options.scale, float)


@pytest.mark.parametrize(
    "given, message",
    [
        ({"stpes": 4}, r"unknown setting\(s\) thing\.stpes; thing=a has steps, scale"),
        ({"steps": 2.5}, r"thing\.steps=2\.5 is not a valid setting \(expected a whole number"),
        ({"steps": "many"}, r"thing\.steps='many' is not a valid setting"),
        ({"flag": "yes"}, r"thing\.flag='yes' is not a valid setting"),
        ({"names": "x"}, r"thing\.names='x' is not a valid setting"),
    ],
)
def test_bad_options_name_the_key(given, message):
    things = Registry("thing")
    things.register("a", options=Knobs)(object)
    with pytest.raises(ConfigError, match=message):
        things.options("a", given)


def test_unknown_name_lists_the_choices():
    things = Registry("thing")
    things.register("a")(object)
    with pytest.raises(RegistryError, match=r"unknown thing 'b'; choose one of \['a'\]"):
        things.get("b")
    with pytest.raises(RegistryError, match="takes no options"):
        things.options("a", {"x": 1})


def test_studies_register_themselves():
    assert {"noise", "recompression", "transfer"} <= set(load_studies().names())


@pytest.mark.parametrize(
    "study, message",
    [
        ({"name": "noize"}, r"unknown study 'noize'"),
        ({"name": "noise", "mse": ["a lot"]}, r"study\.mse=\['a lot'\] is not a valid setting"),
        ({"name": "transfer", "fit": "stretch"}, r"study\.fit=stretch is unknown; choose crop \| resize"),
        ({"name": "recompression", "generation": 5}, r"study\.generation"),
    ],
)
def test_study_options_are_checked_before_any_work(tmp_path, study, message):
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match=message):
        run_study(OmegaConf.create({"study": study}), tmp_path)
    assert not any(tmp_path.iterdir())
