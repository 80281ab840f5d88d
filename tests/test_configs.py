"""Every option of every config group, and every pair of options of different groups, either passes the
settings checks or is refused with a one-line message, before any codec, data or directory is built (in the
spirit of lightning-hydra-template's tests/test_configs.py); and every job `robust-nic paper` plans (each sweep
job of its multiruns) passes them."""

from __future__ import annotations

import itertools
import logging

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
        {"train_root": "train", "qualities": [3]},  # the paper on Kodak with a training folder
        {"pretrained": False, "dataset": "samples", "models": ["tiny"], "focus": {"model": "tiny", "loss": "mse"}},
    ],
)
def test_every_job_the_paper_plans_passes_the_checks(paper_overrides, tmp_path, monkeypatch):
    """paper.py's jobs run in stages over hours: a job refused at its start after earlier stages finished
    would waste them, so each planned command's overrides pass the checks of its app now, given the files
    the earlier stages (and the weights download) leave."""
    from robust_nic import paper
    from robust_nic.settings import PaperSettings, typed

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # where the zoo weights are downloaded
    (tmp_path / "train").mkdir()
    given = paper_overrides | {"out": str(tmp_path / "paper")}
    if "train_root" in given:
        given["train_root"] = str(tmp_path / given["train_root"])
    jobs = paper.build_jobs(typed(PaperSettings, "paper", given), log=lambda _: None)
    for job in jobs:
        make_input_files(job.argv)
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


def make_input_files(argv: list[str]) -> None:
    """The codec and ranges files a job reads, as the stage before it (or the weights download) leaves them."""
    from pathlib import Path

    values = [v for a, v in zip(argv, argv[1:], strict=False) if a == "--checkpoint"]
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("model.checkpoint", "defense.ranges"):
            values.append(value)
        elif key == "study.codecs":
            values += value.strip("[]").split(",")
    for value in values:
        Path(value).parent.mkdir(parents=True, exist_ok=True)
        Path(value).touch()


def sweep_jobs(app: str, overrides: list[str]) -> list[list[str]]:
    """The jobs of a multirun whose sweep is its config's hydra.sweeper.params (an ablation experiment; one
    job without)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        params = compose(config_name=app, overrides=overrides, return_hydra_config=True).hydra.sweeper.params
    choices = [[f"{key}={value}" for value in str(values).split(",")] for key, values in (params or {}).items()]
    return [[*overrides, *combination] for combination in itertools.product(*choices)]


@pytest.mark.parametrize(
    "app,overrides,says",
    [
        ("train", ["trainer.max_steps=-1"], "trainer.max_steps=-1 must be a whole number >= 1"),
        ("train", ["trainer.max_steps=null"], "trainer.max_steps=None must be a whole number >= 1"),
        ("train", ["optim.lr=-1"], "optim.lr=-1.0 must be in (0, inf]"),
        ("train", ["optim.milestones=[1.5]"], "optim.milestones=1.5 must be in (0, 1]"),
        ("train", ["optim.gamma=-3"], "optim.gamma=-3.0 must be in (0, 1]"),
        ("train", ["train.consistency_weight=-1"], "train.consistency_weight=-1.0 must be in [0, inf]"),
        ("train", ["attack.eps=0.01", "+train.val_attack.stepz=5"], "unknown setting(s) train.val_attack.stepz"),
        ("train", ["attack.eps=0.01", "train.val_attack.steps=0"], "train.val_attack: attack.steps and attack.restarts must be >= 1 (got 0, 1)"),
        ("train", ["attack.eps=0.01", "train.val_attack.name=bogus"], "train.val_attack: unknown attack 'bogus'"),
        ("train", ["data=folder", "data.root=/nonexistent"], "data.root=/nonexistent is not a folder"),
        ("train", ["model.checkpoint=/nonexistent.ckpt"], "model.checkpoint=/nonexistent.ckpt does not exist"),
        ("evaluate", ["device=gpu"], "device=gpu is unknown; choose auto | cpu | cuda | cuda:N | mps"),
        ("evaluate", ["model=elic", "model.pretrained=true"], "model.pretrained=false, or load weights with"),
        ("evaluate", ["model.checkpoint=/nonexistent.ckpt"], "model.checkpoint=/nonexistent.ckpt does not exist"),
        ("evaluate", ["model.checkpoint=CKPT", "study=transfer", "attack=pgd", "study.codecs=[CKPT,/x.ckpt]"],
         "study.codecs[1]=/x.ckpt does not exist"),
        ("evaluate", ["model.checkpoint=CKPT", "study=transfer", "attack=pgd", "study.codecs=[CKPT]",
                      "study.labels=[a,b]"], "study.labels has 2 names for 1 study.codecs"),
        ("evaluate", ["model.checkpoint=CKPT", "data=folder", "data.root=/nonexistent"],
         "data.root=/nonexistent is not a folder"),
        ("evaluate", ["model.checkpoint=CKPT", "study=noise", "attack=pgd", "study.mse=[0.5]"],
         "study.mse=0.5 must be in (0, 0.0625]"),
    ],
)
def test_settings_that_failed_after_work_started_are_refused_before(app, overrides, says, tmp_path):
    checkpoint = tmp_path / "codec.ckpt"
    checkpoint.write_bytes(b"")  # exists; never read by the checks
    with pytest.raises((ConfigError, *user_errors())) as refused:
        check_before_work(app, [o.replace("CKPT", str(checkpoint)) for o in overrides])
    assert says in str(refused.value) and "\n" not in str(refused.value), str(refused.value)


def test_a_cuda_device_the_machine_lacks_is_refused_before_any_work(tmp_path):
    import torch

    (tmp_path / "codec.ckpt").write_bytes(b"")
    device = f"cuda:{torch.cuda.device_count()}"  # one more than the machine has
    with pytest.raises(ConfigError, match=rf"device={device} but this machine has \d+ CUDA device"):
        check_before_work("evaluate", [f"model.checkpoint={tmp_path / 'codec.ckpt'}", f"device={device}"])
