"""Benchmark the defenses of one codec and its adversarially finetuned version (not a test).

    python bench/defenses.py --codec CODEC.pth.tar --finetuned FINETUNED.ckpt [--model tiny]
        [--attack pgd --steps 100 --eps 0.01] [--generations 50] [--max-images 3] [--threads 1]

For none / self_ensemble / resize / bitdepth (on --codec) and the finetuned codec: delta_psnr under the
transferred attack (crafted on the bare --codec) and the adaptive one (crafted through the defense; for
the finetuned codec, crafted on the finetuned codec itself), the clean bpp/PSNR cost against --codec
without defense, and the recompression quality after --generations for default vs finetuned. Images:
the held-out sample photos (data=samples, test split). Everything runs through evaluate.py's jobs
(runner.evaluate, studies.run_study); their run directories stay under --workdir, so
`robust-nic report WORKDIR --out DIR` turns a benchmark into a report page. Prints a table, writes a JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFENSES = ("none", "self_ensemble", "resize", "bitdepth")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", required=True, help="checkpoint of the default codec")
    parser.add_argument(
        "--finetuned", required=True, help="checkpoint of its adversarially finetuned version"
    )
    parser.add_argument(
        "--model", default="tiny", help="Hydra model config giving the architecture (model=...)"
    )
    parser.add_argument("--data", default="samples", help="Hydra data config; its test split is used")
    parser.add_argument("--max-images", type=int, default=None, help="first N test images (default: all)")
    parser.add_argument("--attack", default="pgd", help="Hydra attack config (pgd, chen2023, ifgsm, mifgsm)")
    parser.add_argument("--steps", type=int, default=100, help="attack steps")
    parser.add_argument("--eps", type=float, default=0.01, help="attack budget (RMS; 0.01 = MSE 1e-4, 40 dB)")
    parser.add_argument("--generations", type=int, default=50, help="recompression generations (paper: 50)")
    parser.add_argument("--defenses", nargs="+", default=list(DEFENSES), choices=DEFENSES)
    parser.add_argument("--recompress-self-ensemble", action="store_true", help="add a self-ensemble curve")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (pinned for comparable timings)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--workdir", default="outputs/bench/defenses", help="run directories go here")
    parser.add_argument("--out", default=None, help="JSON results (default: WORKDIR/defenses.json)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    return parser.parse_args(argv)


def base_overrides(args: argparse.Namespace, checkpoint: str, attack: bool = True) -> list[str]:
    overrides = [
        f"model={args.model}",
        f"model.checkpoint={Path(checkpoint).resolve()}",
        f"data={args.data}",
        f"device={args.device}",
        "save_images=false",
    ]
    if attack:
        overrides += [f"attack={args.attack}", f"attack.steps={args.steps}", f"attack.eps={args.eps}"]
    if args.max_images:
        overrides.append(f"max_images={args.max_images}")
    return overrides + list(args.override)


def config(overrides: list[str]):
    from robust_nic.config import compose_config

    return compose_config("evaluate", overrides)


def timed(label: str, timings: dict, job):
    start = time.perf_counter()
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    result = job()
    timings[label] = time.perf_counter() - start
    return result


def run_benchmark(args: argparse.Namespace) -> dict:
    from robust_nic.evaluation import metric_keys
    from robust_nic.evaluation.runner import evaluate
    from robust_nic.studies import run_study

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    default = base_overrides(args, args.codec)
    finetuned_clean_overrides = base_overrides(args, args.finetuned, attack=False)
    timings: dict[str, float] = {}

    # Defenses on the default codec: clean, transferred (adv) and adaptive rows from the evaluation job.
    evaluations = {
        name: timed(f"evaluate defense={name}", timings,
                    lambda name=name: evaluate(config([*default, f"defense={name}"]), workdir / f"eval_{name}"))
        for name in args.defenses
    }  # fmt: skip
    finetuned_clean = timed("evaluate finetuned (clean)", timings,
                            lambda: evaluate(config(finetuned_clean_overrides), workdir / "eval_finetuned"))  # fmt: skip
    # Finetuned: transferred = crafted on the default codec, adaptive = crafted on the finetuned codec.
    ours, tuned = codec_labels(args)
    labels = [f"study.label='{ours}'", f"study.labels=['{tuned}']"]
    transfer = timed("transfer study default <-> finetuned", timings, lambda: run_study(
        config([*default, "study=transfer", f"study.codecs=[{Path(args.finetuned).resolve()}]", *labels,
                "study.cross_image=false"]), workdir / "transfer"))  # fmt: skip
    recompression_overrides = [*default, "study=recompression", f"study.generations={args.generations}",
                               f"study.codecs=[{Path(args.finetuned).resolve()}]", *labels, "study.keep_generations=[]",
                               f"study.with_self_ensemble={str(args.recompress_self_ensemble).lower()}"]  # fmt: skip
    recompression = timed("recompression study", timings,
                          lambda: run_study(config(recompression_overrides), workdir / "recompression"))  # fmt: skip

    base = evaluations.get("none")
    rows = [defense_row(name, m, base) for name, m in evaluations.items()]
    rows.append(
        defense_row("finetuned", finetuned_clean, base)
        | {
            "adv/delta_psnr": transfer[metric_keys.transfer_pair_key(ours, tuned)],
            "adaptive/delta_psnr": transfer[metric_keys.transfer_pair_key(tuned, tuned)],
        }
    )
    recompressed = [
        {
            "codec": label,
            "psnr_gen1": recompression[f"study/recompression/{label}/psnr_gen1"],
            f"psnr_gen{args.generations}": recompression[
                f"study/recompression/{label}/psnr_gen{args.generations}"
            ],
            "psnr_drop": recompression[f"study/recompression/{label}/psnr_drop"],
        }
        for label in [ours, tuned] + ([f"{ours}+self_ensemble"] if args.recompress_self_ensemble else [])
    ]
    checks = {}
    if base is not None:  # the same attack on the same codec, measured by two jobs: must agree
        checks["transfer default->default == evaluate none adv"] = math.isclose(
            transfer[metric_keys.transfer_pair_key(ours, ours)],
            base["test/adv/delta_psnr"],
            abs_tol=1e-9,
        )
    return {
        "arguments": vars(args),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "defenses": rows,
        "recompression": recompressed,
        "checks": checks,
        "seconds": timings,
        "runs": str(workdir.resolve()),
    }


def codec_labels(args: argparse.Namespace) -> tuple[str, str]:
    """The names the runs give the two codecs (from their files), or default/finetuned if they clash."""
    from robust_nic.evaluation.labels import checkpoint_label

    ours, tuned = checkpoint_label(args.codec), checkpoint_label(args.finetuned)
    return (ours, tuned) if ours != tuned else ("default", "finetuned")


def defense_row(name: str, metrics: dict, base: dict | None) -> dict:
    """Clean cost vs the undefended codec; transferred = `adv` rows, adaptive = `adaptive` rows
    (for no defense both are the direct attack)."""
    row = {"defense": name, "clean/bpp": metrics["test/clean/bpp"], "clean/psnr": metrics["test/clean/psnr"]}
    if base is not None:
        row |= {
            "cost_bpp": row["clean/bpp"] - base["test/clean/bpp"],
            "cost_psnr": row["clean/psnr"] - base["test/clean/psnr"],
        }
    if "test/adv/delta_psnr" in metrics:
        row["adv/delta_psnr"] = metrics["test/adv/delta_psnr"]
        row["adaptive/delta_psnr"] = metrics.get("test/adaptive/delta_psnr", metrics["test/adv/delta_psnr"])
    return row


def print_tables(results: dict) -> None:
    args = results["arguments"]
    print(
        f"\nDefenses: {args['attack']} {args['steps']} steps, eps {args['eps']}, {results['threads']} thread(s); "
        "delta_psnr = PSNR_in - PSNR_out (dB, lower is more robust); cost vs the undefended codec"
    )
    header = ("defense", "bpp", "PSNR", "cost bpp", "cost PSNR", "dPSNR transferred", "dPSNR adaptive")
    print("  ".join(f"{h:>17}" for h in header))
    keys = ("clean/bpp", "clean/psnr", "cost_bpp", "cost_psnr", "adv/delta_psnr", "adaptive/delta_psnr")
    for row in results["defenses"]:
        print(f"{row['defense']:>17}  " + "  ".join(f"{_num(row.get(k)):>17}" for k in keys))
    print(f"\nRecompression ({args['generations']} generations): PSNR vs the original (dB)")
    for row in results["recompression"]:
        print("  ".join(f"{k}={_num(v) if not isinstance(v, str) else v}" for k, v in row.items()))
    for check, ok in results["checks"].items():
        print(f"check: {check}: {'ok' if ok else 'MISMATCH'}")
    print(f"seconds: {json.dumps({k: round(v, 1) for k, v in results['seconds'].items()})}")


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run_benchmark(args)
    out = Path(args.out) if args.out else Path(args.workdir) / "defenses.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_tables(results)
    print(f"\nresults: {out}; run directories: {results['runs']}")
    return results


if __name__ == "__main__":
    main()
