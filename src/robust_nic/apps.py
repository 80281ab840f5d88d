"""The Hydra apps behind `robust-nic train|evaluate|paper` (and the checkout's train.py, evaluate.py and
paper.py, thin doors to these): the same overrides everywhere, the configs from inside the package."""

import subprocess
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="pkg://robust_nic.conf", config_name="train")
def train_app(cfg: DictConfig) -> float | None:
    from robust_nic.cli import run_job
    from robust_nic.training import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # The overrides go into the "to continue, run: ..." message of an interrupted run.
    overrides = list(hydra_cfg.overrides.task)
    results = run_job(lambda: train(cfg, run_dir, overrides=overrides), run_dir, cfg.get("threads"))
    # The value Hydra sweepers (Optuna) minimise.
    return results.get(cfg.get("optimized_metric") or "", None) if results else None


@hydra.main(version_base="1.3", config_path="pkg://robust_nic.conf", config_name="evaluate")
def evaluate_app(cfg: DictConfig) -> None:
    from robust_nic.cli import run_job
    from robust_nic.evaluation.runner import evaluate
    from robust_nic.studies import run_study

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    job = (lambda: run_study(cfg, run_dir)) if cfg.get("study", {}).get("name", "none") != "none" else (lambda: evaluate(cfg, run_dir))
    run_job(job, run_dir, cfg.get("threads"))


@hydra.main(version_base="1.3", config_path="pkg://robust_nic.conf", config_name="paper")
def paper_app(cfg: DictConfig) -> None:
    from robust_nic import paper
    from robust_nic.config import ConfigError

    settings = OmegaConf.to_container(cfg, resolve=True)
    try:
        jobs = paper.build_jobs(settings, log=lambda _: None)
    except ConfigError as err:  # a name the paper config gives that conf/ lacks: before any work
        print(f"paper: error: {err}", file=sys.stderr)
        sys.exit(2)
    if cfg.job is not None:  # one job of a stage's multirun
        job = next((j for j in jobs if j.id == cfg.job), None)
        if job is None:
            sys.exit(f"error: no job {cfg.job!r}; the jobs: {', '.join(j.id for j in jobs)}")
        # A failed job leaves no results (the driver lists it, a re-run retries it); the others go on.
        paper.run_one(settings, job)
        return
    drive(settings, paper)


def drive(settings: dict, paper) -> None:
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
    if problem and not settings["dry_run"]:
        sys.exit(f"paper: error: {problem}")
    if settings["estimate"]["probe"]:
        seconds = paper.estimate(settings, todo, log=print)
        print(
            f"paper: estimated duration {paper.duration_text(seconds)} on this machine, one job at a time "
            "(timed forward+backward pass per model x the passes per job in conf/paper.yaml estimate.*)",
            flush=True,
        )
    if settings["dry_run"]:
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
    print(f"paper: report {settings['out']}/report/report.md; unfinished: {', '.join(left) or 'none'}")
    if left:
        sys.exit(1)
