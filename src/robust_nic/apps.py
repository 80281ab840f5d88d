"""The Hydra apps behind `robust-nic train|evaluate|paper` (and the checkout's train.py, evaluate.py and
paper.py, thin doors to these): the same overrides everywhere, the configs from inside the package."""

import contextlib
import logging
import subprocess
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict


def checked_settings(app: str, cfg: DictConfig) -> dict:
    """What `robust-nic train|evaluate` checks before any work: every setting of the composed config
    (typed groups, cross-group rules, the study's options, the attack as it will be built)."""
    from robust_nic.attacks import build_attack

    if app == "train":
        from robust_nic.training import checked_settings as check
    else:
        from robust_nic.evaluation.setup import checked_settings as check
    settings = check(cfg)
    study = settings.get("study") or {}
    if study.get("name") not in (None, "none"):
        from robust_nic.studies import load_studies

        load_studies().options(study["name"], study)
    build_attack(settings.get("attack"))
    return settings


class CheckSettings(Callback):
    """Hydra callback: the settings are checked before Hydra creates the run directory (Hydra makes it
    before the job starts), so a refused setting leaves no empty run directory behind. A multirun of
    Hydra's basic sweeper checks every job's settings before the first job starts (a refused job would
    otherwise stop the sweep after the jobs before it ran); other sweepers' jobs check theirs at start."""

    def __init__(self, app: str):
        self.app = app

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from robust_nic.cli import one_line_errors

        with one_line_errors(logged=False), quiet():
            checked_settings(self.app, without_hydra(config))

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from hydra import compose

        from robust_nic.cli import one_line_errors

        jobs = sweep_jobs(config)
        for number, overrides in enumerate(jobs):
            with one_line_errors(logged=False), job_named(number, len(jobs), overrides), quiet():
                checked_settings(self.app, without_hydra(compose(config_name=self.app, overrides=overrides)))


@contextlib.contextmanager
def quiet():
    """The early check says only what refuses a run: its warnings (e.g. fewer MS-SSIM scales) come once,
    from the job's own check, in the job's log."""
    logger = logging.getLogger("robust_nic")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def without_hydra(config: DictConfig) -> DictConfig:
    task = config.copy()
    with open_dict(task):
        task.pop("hydra", None)
    return task


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """Each job's overrides of a basic-sweeper multirun (the config's hydra.sweeper.params, then the command
    line), as Hydra's BasicSweeper splits them; none for another sweeper (e.g. Optuna's search spaces)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return []
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


@contextlib.contextmanager
def job_named(number: int, count: int, overrides: list[str]):
    """A settings error of one job of a sweep says which job (before any job ran)."""
    from robust_nic.settings import ConfigError

    try:
        yield
    except ConfigError as err:
        raise ConfigError(f"sweep job {number} of jobs 0..{count - 1} ({' '.join(overrides)}): {err}") from err


@hydra.main(version_base="1.3", config_path="pkg://robust_nic.conf", config_name="train")
def train_app(cfg: DictConfig) -> float | None:
    from robust_nic.cli import run_job
    from robust_nic.training import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # The overrides go into the "to continue, run: ..." message of an interrupted run.
    overrides = list(hydra_cfg.overrides.task)
    results = run_job(lambda: train(cfg, run_dir, overrides=overrides), run_dir, cfg.threads)
    # The value Hydra sweepers (Optuna) minimise.
    return results.get(cfg.optimized_metric or "", None) if results else None


@hydra.main(version_base="1.3", config_path="pkg://robust_nic.conf", config_name="evaluate")
def evaluate_app(cfg: DictConfig) -> None:
    from robust_nic.cli import run_job
    from robust_nic.evaluation.runner import evaluate
    from robust_nic.studies import run_study

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    job = (lambda: run_study(cfg, run_dir)) if cfg.study.name != "none" else (lambda: evaluate(cfg, run_dir))
    run_job(job, run_dir, cfg.threads)


@hydra.main(version_base="1.3", config_path="pkg://robust_nic.conf", config_name="paper")
def paper_app(cfg: DictConfig) -> None:
    from robust_nic import paper
    from robust_nic.cli import one_line_errors
    from robust_nic.settings import PaperSettings, typed

    with one_line_errors(logged=False):  # a paper setting, or a name conf/ lacks: before any work
        settings = typed(PaperSettings, "paper", OmegaConf.to_container(cfg, resolve=True))
        jobs = paper.build_jobs(settings, log=lambda _: None)
    if cfg.job is not None:  # one job of a stage's multirun
        job = next((j for j in jobs if j.id == cfg.job), None)
        if job is None:
            sys.exit(f"error: no job {cfg.job!r}; the jobs: {', '.join(j.id for j in jobs)}")
        # A failed job leaves no results (the driver lists it, a re-run retries it); the others go on.
        paper.run_one(settings, job)
        return
    drive(settings, paper)


def drive(settings, paper) -> None:
    """Run every unfinished job of the paper (`settings`: PaperSettings), stage by stage, then the report."""
    from hydra.core.hydra_config import HydraConfig

    jobs = paper.build_jobs(settings)
    todo = [j for j in jobs if not paper.finished(settings, j)]
    print(f"paper: {len(jobs)} jobs, {len(jobs) - len(todo)} finished, {len(todo)} to run")
    problem = paper.training_set_problem(settings, todo)
    missing = paper.missing_inputs(settings) + ([problem] if problem else [])
    print(
        "paper: missing: "
        + ("nothing" if not missing else f"{len(missing)} inputs\n  " + "\n  ".join(missing))
    )
    if problem and not settings.dry_run:
        sys.exit(f"paper: error: {problem}")
    if settings.estimate.probe:
        seconds = paper.estimate(settings, todo, log=print)
        print(
            f"paper: estimated duration {paper.duration_text(seconds)} on this machine, one job at a time "
            "(timed forward+backward pass per model x the passes per job in conf/paper.yaml estimate.*)",
            flush=True,
        )
    if settings.dry_run:
        return
    user = [o for o in HydraConfig.get().overrides.task if not o.startswith(("job=", "stage="))]
    failed = []
    for stage in sorted({j.stage for j in todo}):
        ids = [j.id for j in todo if j.stage == stage]
        print(f"paper: stage {stage}: {', '.join(ids)}", flush=True)
        code = subprocess.run(
            [sys.executable, "-m", "robust_nic", "paper", "-m", f"stage={stage}", f"job={','.join(ids)}", *user]
        ).returncode
        if code != 0:
            failed.append(stage)
    left = [j.id for j in jobs if not paper.finished(settings, j) and j.kind != "report"]
    print(f"paper: report {settings.out}/report/report.md; unfinished: {', '.join(left) or 'none'}")
    if left:
        sys.exit(1)
