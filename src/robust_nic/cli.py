"""Command-line plumbing: clear one-line errors for user mistakes instead of tracebacks."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

log = logging.getLogger("robust_nic")


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean a wrong setting or input (not a bug): shown as one line, exit status 2."""
    from robust_nic.attacks import AttackConfigError, ObjectiveError, ProxyError
    from robust_nic.codecs import CodecError
    from robust_nic.config import ConfigError
    from robust_nic.defenses import DefenseError
    from robust_nic.images import ImageError

    return (CodecError, ConfigError, ImageError, AttackConfigError, ObjectiveError, ProxyError, DefenseError)


def run_job(job: Callable[[], dict]) -> dict:
    """Run job(); a configuration or input mistake exits with status 2 and a message saying what to do."""
    try:
        return job()
    except user_errors() as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """`robust-nic report RUN_DIR...`: gather evaluation runs into one report."""
    import argparse

    parser = argparse.ArgumentParser(prog="robust-nic")
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="gather evaluation run directories into a Markdown/HTML report")
    report.add_argument("runs", nargs="+", help="run directories (or parents of them)")
    report.add_argument("--out", default="report", help="output directory")
    args = parser.parse_args(argv)
    if args.command == "report":
        from robust_nic.evaluation.report import write_report

        try:
            path = write_report(args.runs, args.out)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        print(f"report written to {path}")
