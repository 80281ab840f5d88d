"""Store a benchmark's output in bench/results with what the Benchmarks page needs (a tool, not a benchmark).

    python bench/attack.py --checkpoint CKPT --threads 1 --out /tmp/attack.json
    python bench/record_result.py /tmp/attack.json --benchmark attack_step --device cpu \
        --title "Attack step: strength and cost per step" \
        --command "python bench/attack.py --checkpoint CKPT --threads 1" \
        --machine "2-core x86 CPU, nothing else running" [--description "..."]

writes bench/results/attack_step_cpu.json: the given fields, robust-nic's version, today's date, the script's
JSON as `results`, and `tables` made from it where its shape allows (a list of flat rows, or a mapping of
names to flat rows; nested values are left to `results`). Edit `tables` by hand to show fewer columns.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def scalar(value) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def finite(value):
    """NaN and inf as null: the stored files are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def rounded(value):
    return round(value, 4) if isinstance(value, float) else value


def table_of(rows: list[dict], first: str | None = None) -> dict | None:
    """A table of flat rows: the union of their scalar keys as columns."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k, v in row.items() if scalar(v) and k not in columns]
    if not columns:
        return None
    header = ([first] if first else []) + columns
    body = [([row.get(first)] if first else []) + [rounded(row.get(c)) for c in columns] for row in rows]
    return {"columns": header, "rows": body}


def tables_from(results) -> list[dict]:
    """Tables made from the common shapes of the scripts' JSON output."""
    if isinstance(results, list) and results and all(isinstance(r, dict) for r in results):
        table = table_of(results)
        return [table] if table else []
    tables = []
    if isinstance(results, dict):
        for key, value in results.items():
            if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
                table = table_of(value)
            elif isinstance(value, dict) and value and all(isinstance(r, dict) for r in value.values()):
                table = table_of([{"name": name, **row} for name, row in value.items()], None)
            else:
                table = None
            if table:
                tables.append({"caption": key, **table})
    return tables


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the JSON the benchmark script wrote (--out)")
    parser.add_argument("--benchmark", required=True, help="what was measured, e.g. attack_step")
    parser.add_argument("--device", required=True, help="where, e.g. cpu, h200")
    parser.add_argument("--title", required=True)
    parser.add_argument("--command", required=True, action="append", help="the command that made it (repeatable)")
    parser.add_argument("--machine", required=True, help="the machine, and what else ran on it")
    parser.add_argument("--description", default="", help="codec, images, settings, what the numbers mean")
    parser.add_argument("--version", default=None, help="default: the installed robust-nic's")
    parser.add_argument("--date", default=None, help="default: today")
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.version is None:
        from robust_nic import __version__ as version
    else:
        version = args.version
    results = finite(json.loads(Path(args.output).read_text(encoding="utf-8")))
    record = {
        "benchmark": args.benchmark,
        "device": args.device,
        "title": args.title,
        "command": args.command[0] if len(args.command) == 1 else args.command,
        "machine": args.machine,
        "version": version,
        "date": args.date or datetime.date.today().isoformat(),
        "description": args.description,
        "tables": tables_from(results),
        "results": results,
    }
    path = Path(args.results_dir) / f"{args.benchmark}_{args.device}.json"
    path.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(record['tables'])} tables)")
    return path


if __name__ == "__main__":
    main()
