"""Every option of every config group, and every pair of options of different groups, either passes the
settings checks or is refused with a one-line message, before any codec, data or directory is built (in the
spirit of lightning-hydra-template's tests/test_configs.py); and every job `robust-nic paper` plans (each sweep
job of its multiruns) passes them."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from robust_nic.apps import checked_settings
from robust_nic.cli import user_errors
from robust_nic.config import CONF_DIR, ConfigError, compose_config

TRAIN_GROUPS = ("model", "loss", "attack", "data", "trainer", "logger", "experiment")
EVALUATE_GROUPS = ("model", "loss", "attack", "defense", "study", "data", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if p.stem != "base")


def pairwise(groups: tuple[str, ...]) -> list[dict[str, str]]:
    """A small set of combinations in which every pair of options of two groups occurs (greedy covering)."""
    values = {g: options(g) for g in groups}
    uncovered = {((g, a), (h, b)) for g, h in itertools.combinations(groups, 2) for a in values[g] for b in values[h]}
    order = {g: i for i, g in enumerate(groups)}

    def pair(x, y):
        return (x, y) if order[x[0]] < order[y[0]] else (y, x)

    rows = []
    while uncovered:
        (g, a), (h, b) = min(uncovered)
        row = {g: a, h: b}
        for group in groups:
            if group not in row:
                row[group] = max(values[group], key=lambda v: sum(pair((group, v), (k, w)) in uncovered for k, w in row.items()))
        uncovered -= {pair(x, y) for x, y in itertools.combinations(row.items(), 2)}
        rows.append(row)
    return rows


def check_before_work(app: str, overrides: list[str]) -> None:
    """What train.py / evaluate.py check before Hydra creates the run directory (apps.CheckSettings),
    Hydra's composition included."""
    checked_settings(app, compose_config(app, overrides))


def passes_or_is_refused(app: str, overrides: list[str]) -> str | None:
    """None when the combination passes; the one-line refusal otherwise (anything else fails the test)."""
    try:
        check_before_work(app, overrides)
    except (*user_errors(), HydraException, OmegaConfBaseException) as err:
        message = str(err).strip()
        assert message and "\n" not in message.split("\n    ")[0], f"{overrides}: not one line: {message!r}"
        return message
    return None


@pytest.fixture(autouse=True)
def quiet():
    logging.getLogger("robust_nic").setLevel(logging.ERROR)
    yield
    logging.getLogger("robust_nic").setLevel(logging.NOTSET)


@pytest.mark.parametrize("app,groups", [("train", TRAIN_GROUPS), ("evaluate", EVALUATE_GROUPS)])
def test_every_option_of_every_group(app, groups):
    for group in groups:
        for option in options(group):
            passes_or_is_refused(app, [f"{group}={option}"])


@pytest.mark.parametrize("app,groups", [("train", TRAIN_GROUPS), ("evaluate", EVALUATE_GROUPS)])
def test_every_pair_of_options(app, groups):
    combinations = pairwise(groups)
    assert len(combinations) < 400  # pairwise, not the full product
    refused = {}
    for row in combinations:
        message = passes_or_is_refused(app, [f"{g}={v}" for g, v in row.items()])
        if message:
            refused[str(row)] = message
    assert len(refused) < len(combinations)  # most documented combinations run


@pytest.mark.parametrize(
    "app,overrides,says",
    [
        ("train", ["attack=worst_case", "attack.eps=0.01"], "attack=worst_case is an evaluation suite"),
        ("train", ["optim.scheduler=bogus"], "optim.scheduler=bogus is unknown"),
        ("train", ["train.adv_target=x"], "train.adv_target=x is unknown"),
        ("train", ["+optim.momentum=0.9"], "unknown setting(s) optim.momentum"),
        ("train", ["data=kodak"], "data.train_root"),
        ("evaluate", ["study=noise", "attack=worst_case", "attack.eps=0.01"], "study=noise compares"),
        ("evaluate", ["study=noise"], "study=noise needs an attack"),
        ("evaluate", ["study=noise", "attack=noise", "attack.eps=0.01"], "attack=noise is the noise itself"),
        ("evaluate", ["study=noise", "attack=pgd", "attack.norm=linf"], "use attack.norm=rms, not linf"),
        ("evaluate", ["study=transfer", "attack=pgd", "attack.eps=[0.01,0.02]"], "study=transfer takes one attack.eps"),
        ("evaluate", ["study=latents"], "study=latents needs an attack"),
        ("evaluate", ["defense=resize", "defense.factor=2"], "defense.factor=2.0 must be in (0, 1]"),
        ("evaluate", ["defense=bitdepth", "defense.bits=9"], "defense.bits=9 must be in [1, 8]"),
        ("evaluate", ["defense=bitdepth", "defense.bits=2.5"], "defense.bits=2.5 is not a valid setting"),
        ("evaluate", ["defense=bitdepth", "+defense.foo=1"], "unknown setting(s) defense.foo; defense="),
        ("evaluate", ["defense=self_ensemble", "defense.transforms=[0,0]"], "defense.transforms=[0, 0] must"),
        ("evaluate", ["defense=self_ensemble", "defense.transforms=[8]"], "defense.transforms=[8]: dihedral"),
        ("evaluate", ["defense=latent_range", "attack=pgd"], "latent_range needs defense.ranges=FILE"),
        ("evaluate", ["defense=latent_range", "defense.ranges=nope.pt"], "defense.ranges=nope.pt does not"),
    ],
)
def test_combinations_that_used_to_fail_after_work_started_are_refused_before(app, overrides, says):
    with pytest.raises((ConfigError, *user_errors())) as refused:
        check_before_work(app, overrides)
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (["defense=resize", "defense.factor=2"], "error: defense.factor=2.0 must be in (0, 1]"),
        (["defense=latent_range", "attack=pgd"], "error: defense=latent_range needs defense.ranges=FILE"),
    ],
    ids=["resize", "latent_range"],
)
def test_a_refused_defense_stops_the_command_before_its_run_directory(overrides, error, tmp_path):
    from test_typed_settings import error_lines, run_cli

    done = run_cli("evaluate", overrides, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = error_lines(done)
    assert len(lines) == 1 and lines[0].startswith(error), lines
    assert not (tmp_path / "run").exists()


def test_ms_ssim_training_on_small_crops_passes_the_checks():
    """loss=ms_ssim trains on the default 64 px crops with fewer MS-SSIM scales (said in a warning)."""
    check_before_work("train", ["loss=ms_ssim"])


# Groups whose options set keys outside their own package, and why: an experiment is a whole run's settings;
# a model carries its training recipe (data.patch_size, trainer.max_steps, ...); a sweeper's settings live
# under hydra.
GLOBAL_GROUPS = {"experiment", "model", "hparams_search"}


def test_no_other_config_group_writes_into_another_groups_keys():
    import yaml

    for path in sorted(CONF_DIR.glob("*/*.yaml")):
        text = path.read_text()
        if path.parent.name in GLOBAL_GROUPS:
            continue
        assert "@package" not in text, f"{path.relative_to(CONF_DIR)} moves itself out of its group's package"
        keys = set(yaml.safe_load(text) or {}) - {"defaults"}
        others = {p.name for p in CONF_DIR.iterdir() if p.is_dir()} - {path.parent.name}
        assert not keys & others, f"{path.relative_to(CONF_DIR)} sets {sorted(keys & others)}"


@pytest.mark.parametrize(
    ("overrides", "steps", "every"),
    [
        (["model=cheng2020"], 2000, 250),  # a codec config's training length is not the trainer default's
        (["model=tiny", "trainer=ddp_cpu"], 1200, 300),
        (["model=mbt2018", "trainer.max_steps=7"], 7, 250),  # the command line still wins
    ],
)
def test_codec_configs_set_their_training_length(overrides, steps, every):
    trainer = compose_config("train", overrides).trainer
    assert (trainer.max_steps, trainer.val_check_interval) == (steps, every)


@pytest.mark.parametrize(
    "paper_overrides",
    [
        {"train_root": "/data/train", "qualities": [3]},  # the paper on Kodak with a training folder
        {"pretrained": False, "dataset": "samples", "models": ["tiny"], "focus": {"model": "tiny", "loss": "mse"}},
    ],
)
def test_every_job_the_paper_plans_passes_the_checks(paper_overrides, tmp_path):
    """paper.py's jobs run in stages over hours: a job refused at its start after earlier stages finished
    would waste them, so each planned command's overrides pass the checks of its app now (given the files
    the earlier stages write that the checks read: the latent ranges)."""
    from robust_nic import paper
    from robust_nic.settings import PaperSettings, typed

    settings = typed(PaperSettings, "paper", paper_overrides | {"out": str(tmp_path)})
    jobs = paper.build_jobs(settings, log=lambda _: None)
    for job in jobs:
        if job.argv and job.argv[2] == "fit-latent-range":  # stage 1 writes what defense=latent_range reads
            ranges = Path(job.argv[job.argv.index("--out") + 1])
            ranges.parent.mkdir(parents=True, exist_ok=True)
            ranges.touch()
    checked = 0
    for job in jobs:
        if not job.argv:
            continue  # the report: no settings of its own
        app, args = job.argv[2], job.argv[3:]
        if app == "fit-latent-range":  # --checkpoint FILE --out FILE, then evaluate overrides
            flags = dict(zip(args[:4:2], args[1:4:2], strict=True))
            app, args = "evaluate", [f"model.checkpoint={flags['--checkpoint']}", *args[4:]]
        overrides = [a for a in args if not a.startswith("hydra.") and a != "-m"]
        for sweep_job in sweep_jobs(app, overrides) if "-m" in args else [overrides]:
            assert passes_or_is_refused(app, sweep_job) is None, f"{job.id}: {sweep_job}"
        checked += 1
    assert checked == len(jobs) - 1


def sweep_jobs(app: str, overrides: list[str]) -> list[list[str]]:
    """The jobs of a multirun whose sweep is its config's hydra.sweeper.params (an ablation experiment; one
    job without)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        params = compose(config_name=app, overrides=overrides, return_hydra_config=True).hydra.sweeper.params
    choices = [[f"{key}={value}" for value in str(values).split(",")] for key, values in (params or {}).items()]
    return [[*overrides, *combination] for combination in itertools.product(*choices)]
