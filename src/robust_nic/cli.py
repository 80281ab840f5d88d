"""Command-line plumbing: clear one-line errors for user mistakes instead of tracebacks."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("robust_nic")


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean a wrong setting or input (not a bug), or results that cannot be reported (NaN):
    shown as one line, exit status 2."""
    from robust_nic.evaluation.measure import NonFiniteError
    from robust_nic.fingerprints import TrainingImageError
    from robust_nic.images import ImageError
    from robust_nic.run_dir import RunDirError
    from robust_nic.settings import ConfigError  # every settings problem: attack, codec, defense, registry...

    return (ConfigError, ImageError, RunDirError, NonFiniteError, TrainingImageError)


@contextlib.contextmanager
def one_line_errors(logged: bool = True):
    """A user error (user_errors()) inside ends the process: one line on stderr, exit status 2 (`logged`:
    also in the job's log file; false before the run directory, and so the log file, exists)."""
    try:
        yield
    except user_errors() as err:
        if logged:
            log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def run_job(job: Callable[[], dict], run_dir: Path | None = None, threads: int | None = None) -> dict:
    """Run job() as the only job writing into run_dir (a lock file there), with `threads` CPU threads
    (null: OMP_NUM_THREADS, else all cores); a configuration or input mistake, or a run_dir in use by
    another job, exits with status 2 and a message saying what to do."""
    from robust_nic.resume import TrainingStopped
    from robust_nic.run_dir import hold_run_dir
    from robust_nic.threads import configure_threads

    try:
        with one_line_errors():
            configure_threads(threads)
            with hold_run_dir(run_dir):
                return job()
    except TrainingStopped as stopped:
        log.warning("%s", stopped)
        print(f"stopped: {stopped}", file=sys.stderr)
        end_as_signalled(stopped.signal_name)
    except KeyboardInterrupt:
        # Training prints how to continue (resume.SaveOnInterrupt); an evaluation kept its finished rows.
        where = f" in {run_dir}" if run_dir else ""
        print(f"interrupted (Ctrl-C): what finished is kept{where}", file=sys.stderr)
        sys.exit(130)


def end_as_signalled(name: str) -> None:
    """After saving, end as the signal would have ended the process: a handler installed before training
    runs (a cluster launcher's requeue, e.g. submitit's on SIGUSR2); then, or without one, exit 128+N (the
    status a shell reports for a process the signal killed, so a job script can requeue on it)."""
    import signal

    signum = signal.Signals[name]
    if callable(signal.getsignal(signum)) and signum != signal.SIGINT:
        signal.raise_signal(signum)
    sys.exit(128 + int(signum))


APPS = ("train", "evaluate", "paper")  # Hydra apps: the rest of the command line is their overrides


def main(argv: list[str] | None = None) -> None:
    """`robust-nic train|evaluate|paper [overrides]` (as train.py, evaluate.py, paper.py), `robust-nic report
    RUN_DIR...` (one report page), `robust-nic bdrate --anchor ... --test ...`, `robust-nic fit-latent-range`."""
    import argparse

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in APPS:
        from robust_nic import apps

        sys.argv = [f"robust-nic {argv[0]}", *argv[1:]]  # Hydra reads its overrides from sys.argv
        getattr(apps, f"{argv[0]}_app")()
        return

    parser = argparse.ArgumentParser(prog="robust-nic")
    sub = parser.add_subparsers(dest="command", required=True)
    for app in APPS:
        sub.add_parser(app, help=f"the Hydra app of {app}.py: robust-nic {app} [overrides]")
    report = sub.add_parser("report", help="gather evaluation run directories into a Markdown/HTML report")
    report.add_argument("runs", nargs="+", help="run directories (or parents of them)")
    report.add_argument("--out", default="report", help="output directory")
    bdrate = sub.add_parser("bdrate", help="BD-rate / BD-PSNR of test evaluation runs against anchor runs")
    bdrate.add_argument(
        "--anchor", nargs="+", required=True, help="evaluation runs of the reference codec, 2+ qualities"
    )
    bdrate.add_argument(
        "--test", nargs="+", required=True, help="evaluation runs of the codec under test, 2+ qualities"
    )
    bdrate.add_argument("--out", default=None, help="also write the result as JSON")
    fit = sub.add_parser("fit-latent-range", help="fit defense=latent_range's per-channel ranges on the training photos")
    fit.add_argument("--checkpoint", default=None, help="the codec (the same as the override model.checkpoint=CKPT)")
    fit.add_argument("--out", default=None, help="output file (default: CHECKPOINT.latent_range.pt)")
    fit.add_argument("overrides", nargs="*", help="evaluate overrides: model.checkpoint=CKPT model=... data=...")
    args = parser.parse_args(argv)
    if args.command == "fit-latent-range":
        from robust_nic.config import compose_config, resolve, run_settings

        overrides = [f"model.checkpoint={args.checkpoint}"] * bool(args.checkpoint) + args.overrides
        with one_line_errors():
            settings = resolve(compose_config("evaluate", overrides))
        threads = run_settings(settings).threads
        path = run_job(lambda: {"ranges": str(fit_latent_ranges(settings, args.out))}, threads=threads)
        print(f"latent ranges written to {path['ranges']}")
    if args.command == "bdrate":
        print_bd_rate(args.anchor, args.test, args.out)
    elif args.command == "report":
        from robust_nic.evaluation.report import write_report

        try:
            path = write_report(args.runs, args.out)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        print(f"report written to {path}")


def fit_latent_ranges(settings: dict, out: str | None = None) -> Path:
    """The codec as evaluate.py loads it (resolved evaluate `settings`), its latent ranges over the training
    split of `data`, written next to the checkpoint (or to `out`)."""
    import torch

    from robust_nic.checks import check_files
    from robust_nic.config import ConfigError
    from robust_nic.data import split_files, whole_image_reader
    from robust_nic.defenses.latent_range import RANGES_SUFFIX, fit_latent_range
    from robust_nic.evaluation.setup import load_eval_codec
    from robust_nic.settings import group_settings

    model = group_settings(settings, "model")
    checkpoint = model.checkpoint
    if not checkpoint and not (out and model.pretrained):
        raise ConfigError(
            "fit-latent-range needs the codec: model.checkpoint=CKPT (or model.pretrained=true --out FILE for zoo weights)"
        )
    check_files(settings)
    codec = load_eval_codec(settings, torch.device("cpu"))
    data = group_settings(settings, "data")
    files = split_files(data)["train"]
    read_whole = whole_image_reader(data)
    ranges = fit_latent_range(codec, (read_whole(path)[None] for path in files))
    target = Path(out) if out else Path(f"{checkpoint}{RANGES_SUFFIX}")
    torch.save(ranges, target)
    return target


def print_bd_rate(anchor: list[str], test: list[str], out: str | None) -> None:
    from robust_nic.config import write_json
    from robust_nic.evaluation.bdrate import QUALITIES, BDRateError, bd_rate

    try:
        result = bd_rate(anchor, test)
    except (BDRateError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for side in ("anchor", "test"):  # the points used, with their runs: a stray or missing run shows
        for point in result["points"][side]:
            print(f"{side:>6}: {point['bpp']:.4f} bpp  {point['psnr']:.3f} dB  {point['path']}")
    for quality in QUALITIES:
        values = result[quality]
        if "error" in values:
            print(f"BD-rate ({quality}): n/a, {values['error']}")
            continue
        print(
            f"BD-rate ({quality}): {values['bd_rate_pct']:+.2f} % bits at equal quality; "
            f"BD-{quality}: {values['bd_quality_db']:+.3f} dB at equal rate"
        )
    if out:
        write_json(result, Path(out))
        print(f"written to {out}")
