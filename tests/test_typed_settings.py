"""Each config group's settings dataclass is the one home of its defaults, types and ranges: the composed
config carries its defaults, and a bad value is refused with one ConfigError naming `group.key` (through
the real command line: one line, exit status 2, and no run directory left behind)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robust_nic.config import compose_config, resolve
from robust_nic.data import split_files
from robust_nic.settings import (
    AttackSettings,
    ConfigError,
    DataSettings,
    EvalSettings,
    EvaluateRunSettings,
    LossSettings,
    ModelSettings,
    PaperSettings,
    TrainRunSettings,
    group_settings,
    plain,
    typed,
)

ROOT = Path(__file__).resolve().parents[1]


def test_composed_attack_group_holds_the_dataclass_defaults():
    """conf/attack/base.yaml repeats no default: the composed group gets them from AttackSettings."""
    attack = compose_config("evaluate", ["attack=pgd"]).attack
    defaults = dataclasses.asdict(AttackSettings())
    assert {k: attack[k] for k in defaults if k not in ("name", "proxy")} == {
        k: v for k, v in defaults.items() if k not in ("name", "proxy")
    }
    assert (attack.name, attack.proxy, attack.steps) == ("pgd", "ste", 100)  # what pgd.yaml sets
    assert "restarts:" not in (ROOT / "src/robust_nic/conf/attack/base.yaml").read_text()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"restart": 2}, "unknown setting(s) attack.restart;"),
        ({"restarts": "two"}, "attack.restarts='two' is not a valid setting (expected a number"),
        ({"restarts": 1.5}, "attack.restarts=1.5 is not a valid setting (expected a whole number"),
        ({"progress": "yes"}, "attack.progress='yes' is not a valid setting (expected true or false"),
        ({"restarts": 0}, "attack.restarts=0 must be in [1, inf]"),
        ({"name": "pgd", "eps": 0.3}, "attack.eps=0.3 must be in (0, 0.25] for attack.norm=rms"),
        ({"name": "pgd", "norm": "linf", "eps": [0.01, 0.6]}, "attack.eps=0.6 must be in (0, 0.5]"),
        ({"name": "pgd", "eps": None}, "attack.eps=null: attack=pgd needs a budget"),
        ({"linf": 2.0}, "attack.linf=2.0 must be in (0, 1]"),
        ({"norm": "l2"}, "attack.norm=l2 is unknown; choose rms | linf"),
        ({"proxy": "round"}, "attack.proxy=round is unknown; choose skip | noise | ste | none"),
        ({"warmup_steps": -1}, "attack.warmup_steps=-1 must be in [0, inf]"),
    ],
)
def test_attack_settings_refuse_bad_values_naming_the_key(values, message):
    with pytest.raises(ConfigError) as refused:
        typed(AttackSettings, "attack", values)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_null_takes_the_default_unless_the_key_may_be_null():
    settings = typed(
        AttackSettings, "attack", {"name": "pgd", "norm": None, "seed": None, "eps": [0.01, 0.02]}
    )
    assert (settings.norm, settings.seed, settings.eps) == ("rms", None, [0.01, 0.02])


def test_resolve_writes_every_shared_attack_key_into_the_settings():
    settings = resolve(
        compose_config("evaluate", ["attack=chen2023", "attack.eps=0.02", "attack.restarts=2"])
    )
    assert settings["attack"]["restarts"] == 2 and settings["attack"]["eps"] == 0.02
    assert settings["attack"]["select"] == "best" and settings["attack"]["steps"] is None  # optimiser option


@pytest.mark.parametrize(
    ("cls", "group", "values", "message"),
    [
        (
            ModelSettings,
            "model",
            {"name": "x", "arch": "mbt2018", "qualty": 3},
            "unknown setting(s) model.qualty;",
        ),
        (
            ModelSettings,
            "model",
            {"name": "x", "arch": "mbt2018", "quality": "3"},
            "model.quality='3' is not a valid",
        ),
        (
            ModelSettings,
            "model",
            {"name": "x", "arch": "mbt2018", "quality": 0},
            "model.quality=0 must be in [1, inf]",
        ),
        (
            ModelSettings,
            "model",
            {"name": "x", "arch": "mbt2018", "pretrained": 1},
            "model.pretrained=1 is not a valid",
        ),
        (
            ModelSettings,
            "model",
            {"name": "x", "arch": "mbt2018", "channels": [64, 0]},
            "model.channels=0 must be",
        ),
        (
            LossSettings,
            "loss",
            {"metric": "l1"},
            "loss.metric=l1 is unknown; choose loss=mse or loss=ms_ssim",
        ),
        (LossSettings, "loss", {"lmbda": 0}, "loss.lmbda=0.0 must be in (0, inf]"),
        (LossSettings, "loss", {"lambda": 0.1}, "unknown setting(s) loss.lambda;"),
        (DataSettings, "data", {"name": "samples", "patch_size": 0}, "data.patch_size=0 must be in [1, inf]"),
        (
            DataSettings,
            "data",
            {"name": "samples", "val_fraction": 1.5},
            "data.val_fraction=1.5 must be in (0, 1]",
        ),
        (
            DataSettings,
            "data",
            {"name": "samples", "num_workers": -1},
            "data.num_workers=-1 must be in [0, inf]",
        ),
        (DataSettings, "data", {"name": "samples", "batch_size": "8"}, "data.batch_size='8' is not a valid"),
        (DataSettings, "data", {"name": "samples", "roots": "x"}, "unknown setting(s) data.roots;"),
        (EvalSettings, "eval", {"allow_training_images": "yes"}, "eval.allow_training_images='yes' is not a"),
    ],
)
def test_group_settings_refuse_bad_values_naming_the_key(cls, group, values, message):
    with pytest.raises(ConfigError) as refused:
        typed(cls, group, values)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_resolve_refuses_a_bad_group_value_before_any_work():
    with pytest.raises(ConfigError, match=r"^data\.max_pixels=0 must be in \[1, inf\]"):
        resolve(compose_config("evaluate", ["data.max_pixels=0"]))
    with pytest.raises(ConfigError, match=r"^model\.quality=2\.5 is not a valid setting"):
        resolve(compose_config("train", ["model.quality=2.5"]))


@pytest.mark.parametrize("name", ["bmshj2018_factorized", "bmshj2018_hyperprior", "mbt2018", "mbt2018_mean",
                                  "cheng2020", "cheng2020_attn"])  # fmt: skip
def test_zoo_models_share_one_base(name):
    """The zoo codecs' YAMLs say only what differs; the base gives the full-size recipe and the dataclass
    the model.* defaults."""
    text = (ROOT / f"src/robust_nic/conf/model/{name}.yaml").read_text()
    assert "- base" in text and "quality:" not in text and "patch_size" not in text
    cfg = compose_config("train", [f"model={name}"])
    assert cfg.model.name == name and cfg.model.pretrained is True and cfg.model.quality == 3
    assert (cfg.data.patch_size, cfg.data.batch_size) == (256, 8) and cfg.model.checkpoint is None


def test_paper_config_is_its_dataclass():
    cfg = compose_config("paper", ["models=[mbt2018]", "focus.quality=2"])
    settings = plain(typed(PaperSettings, "paper", dict(cfg)))
    assert settings["models"] == ["mbt2018"] and settings["focus"]["quality"] == 2
    assert settings["estimate"]["passes_per_image"]["attack"] == 3003 and settings["generations"] == 50


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"modles": ["mbt2018"]}, "unknown setting(s) paper.modles;"),
        ({"focus": {"quality": "high"}}, "paper.focus.quality='high' is not a valid setting"),
        ({"estimate": {"probe": "no"}}, "paper.estimate.probe='no' is not a valid setting"),
        ({"eps": 0.5}, "paper.eps=0.5 must be in (0, 0.25]"),
        ({"focus": 3}, "paper.focus=3 is not a valid setting: paper.focus has keys model, loss, quality"),
        ({"models": "mbt2018"}, "paper.models='mbt2018' is not a valid setting (expected a list"),
    ],
)
def test_paper_settings_refuse_bad_values_naming_the_key(values, message):
    with pytest.raises(ConfigError) as refused:
        typed(PaperSettings, "paper", values)
    assert str(refused.value).startswith(message)


def run_cli(app: str, overrides: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "robust_nic", app, *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def test_a_refused_setting_leaves_no_run_directory(tmp_path):
    done = run_cli("train", ["optim.scheduler=bogus"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert error_lines(done) == ["error: optim.scheduler=bogus is unknown; choose multistep | cosine | none"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("app", "override", "message"),
    [
        ("train", "attack.restarts=-1", "error: attack.restarts=-1 must be in [1, inf]"),
        (
            "evaluate",
            "attack=pgd attack.eps=0.5",
            "error: attack.eps=0.5 must be in (0, 0.25] for attack.norm=rms",
        ),
        ("evaluate", "model.checkpoint=CKPT attack=pgd +attack.bogus=1",
         "error: attack=pgd has no option(s) ['attack.bogus']"),
        ("evaluate", "model.checkpoint=CKPT study=noise attack=pgd study.mse=oops",
         "error: study.mse='oops' is not a valid setting"),
    ],
)
def test_settings_errors_through_the_command_line(tmp_path, app, override, message):
    (tmp_path / "codec.ckpt").write_bytes(b"")  # a codec file the checks find (never read)
    done = run_cli(app, override.replace("CKPT", str(tmp_path / "codec.ckpt")).split(), tmp_path)
    assert done.returncode == 2, done.stderr
    assert len(error_lines(done)) == 1 and error_lines(done)[0].startswith(message), done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("app", "overrides", "message"),
    [
        ("evaluate", ["max_images=0"], "max_images=0 must be in [1, inf] (or null for every test image)"),
        ("evaluate", ["seed=1.5"], "seed=1.5 is not a valid setting (expected a whole number"),
        ("evaluate", ["save_images=maybe"], "save_images='maybe' is not a valid setting (expected true or false"),
        ("evaluate", ["coding.device=gpu"], "coding.device=gpu is unknown; choose auto | cpu | same"),
        ("train", ["threads=0"], "threads=0 must be in [1, inf]"),
        ("train", ["checkpoint.every_minutes=-1"], "checkpoint.every_minutes=-1.0 must be in [0, inf] (0: every batch)"),
    ],
)
def test_top_level_keys_are_typed(app, overrides, message):
    with pytest.raises(ConfigError) as refused:
        resolve(compose_config(app, overrides))
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(("app", "cls"), [("train", TrainRunSettings), ("evaluate", EvaluateRunSettings)])
def test_top_level_defaults_live_only_in_their_dataclass(app, cls):
    """The YAML sets none of its top-level keys: what a run gets is the dataclass's defaults."""
    from omegaconf import OmegaConf

    composed = OmegaConf.to_container(compose_config(app, []), resolve=True)
    assert {f.name: composed[f.name] for f in dataclasses.fields(cls)} == plain(cls())
    text = (ROOT / "src" / "robust_nic" / "conf" / f"{app}.yaml").read_text()
    assert not [f.name for f in dataclasses.fields(cls) if f"\n{f.name}:" in text]


def test_data_components_take_the_typed_group(photo_dir):
    """data=folder's split from DataSettings: its defaults (val_fraction 0.1, at least one image) apply."""
    settings = resolve(compose_config("evaluate", ["data=folder", f"data.root={photo_dir}"]))
    files = split_files(group_settings(settings, "data"))
    assert len(files["val"]) == 1 and len(files["train"]) == len(files["test"]) - 1
    with pytest.raises(ConfigError, match="data=folder needs data.root=DIR"):
        DataSettings(name="folder")


def test_a_sweep_checks_every_jobs_settings_before_the_first_job(tmp_path):
    """A multirun whose second job is refused stops before its first job runs: the experiment's sweep
    (5 optimisers) times the command line's (2 budgets) are 10 jobs, job 1 the first with eps 0.5."""
    (tmp_path / "codec.ckpt").write_bytes(b"")  # never read: the sweep stops before
    done = subprocess.run([sys.executable, "-m", "robust_nic", "evaluate", "-m", "experiment=ablation_optimizer",
                           f"model.checkpoint={tmp_path / 'codec.ckpt'}", "attack.eps=0.01,0.5",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert error_lines(done) == [
        f"error: sweep job 1 of jobs 0..9 (attack=chen2023 experiment=ablation_optimizer model.checkpoint={tmp_path / 'codec.ckpt'} "
        "attack.eps=0.5): attack.eps=0.5 "
        "must be in (0, 0.25] for attack.norm=rms: eps is in [0,1] pixel units (rms 0.01 = the paper's MSE 1e-4, "
        "40 dB; linf 4/255 = 0.0157); for no attack use attack=none"
    ]
    assert not (tmp_path / "sweep").exists()


def test_a_warning_of_the_settings_check_is_said_once(tmp_path):
    """The early check (before the run directory) and the job's own check see the same settings: the
    fewer-scales warning of loss=ms_ssim on small crops comes once, from the job."""
    done = run_cli("train", ["loss=ms_ssim", "trainer.max_steps=1", "logger=none", "data.max_val_images=1"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (done.stdout + done.stderr).count("uses 3 of MS-SSIM's 5 scales") == 1
    assert "uses 3 of MS-SSIM's 5 scales" in (tmp_path / "run" / "train.log").read_text()
