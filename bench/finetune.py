"""Benchmark adversarial finetuning recipes side by side in one run (a benchmark, not a test).

    python bench/finetune.py --checkpoint outputs/default/checkpoints/last.ckpt [--steps 300] [--device cpu]
    python bench/finetune.py --model cheng2020 --quality 6 --data kodak --steps 2000   # GPU, pretrained weights

Starting from the default codec, finetunes it (0) plainly (no attack), (1) with the paper's recipe scaled down
(experiment=finetune_tiny: chen2023 inner attack, --paper-inner steps per batch) and (2) with the cheap
recipe (experiment=finetune_cheap: PGD, --cheap-inner steps, random start; one row per --consistency
weight) and (3) with the fast recipe (experiment=finetune_fast; one row per --fast-ratio), through the
real train.py job. For the codec before and after each, on the held-out sample
photos: delta_psnr under chen2023 at eps 0.01 (--eval-steps), the random-noise baseline's delta_psnr,
clean PSNR and bpp (real bitstream); and seconds per training step / seconds of a plain RD step.
Targets: finetuning closes >= half of the gap between attacked and noise delta_psnr while
clean PSNR drops <= 0.5 dB at equal or lower bpp; the cheap recipe is within 1 dB of the paper
recipe's robustness at <= 1/5 of its training time; the fast recipe
(experiment=finetune_fast, one PGD step on --fast-ratio of each batch) at <= 1.5x the plain step time and at
least as robust as the paper recipe with 30 inner steps (--recipes plain,paper,fast --paper-inner 30).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]

from robust_nic.config import compose_config  # noqa: E402
from robust_nic.evaluation.runner import evaluate  # noqa: E402
from robust_nic.training import train  # noqa: E402


class StepTimer(L.Callback):
    """Wall seconds of each training batch (attack + RD step), synchronised on GPU."""

    def __init__(self):
        self.seconds: list[float] = []

    def _sync(self, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._start)

    def median(self) -> float:
        return statistics.median(self.seconds[2:] or self.seconds)  # skip warm-up batches


def codec_overrides(args, checkpoint: str | Path | None) -> list[str]:
    """The codec (model config, quality, weights) and the images, shared by training and evaluation."""
    overrides = [f"model={args.model}", f"data={args.data}"]
    overrides += [f"model.quality={args.quality}"] if args.quality is not None else []
    return overrides + ([f"model.checkpoint={checkpoint}"] if checkpoint else [])


def folder(name: str) -> str:
    """A recipe's run folder: `fast@0.4/recon` nested inside `fast@0.4`'s, and `robust-nic bdrate`, which
    collects runs under a folder, would count both."""
    return name.replace("/", "-")


def finetune(args, name: str, overrides: list[str]) -> tuple[Path, float, float]:
    run_dir = Path(args.work) / folder(name)
    timer = StepTimer()
    batch = [f"data.batch_size={args.batch_size}"] if args.batch_size else []
    batch += [f"data.patch_size={args.patch_size}"] if args.patch_size else []
    cfg = compose_config("train", [
        *codec_overrides(args, args.checkpoint), f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.steps}", "trainer.enable_progress_bar=false", "logger=csv",
        f"trainer.accelerator={'gpu' if args.device.startswith('cuda') else 'cpu'}", *batch,
        "train.val_attack.steps=20", "trainer.limit_val_batches=1", *overrides,
    ])
    start = time.perf_counter()
    train(cfg, run_dir, extra_callbacks=[timer])
    return run_dir / "checkpoints" / "last.ckpt", timer.median(), time.perf_counter() - start


def robustness(args, checkpoint: Path | None, name: str) -> dict:
    common = [*codec_overrides(args, checkpoint), f"device={args.device}", "save_images=false", f"max_images={args.max_images}"]
    attacked = evaluate(compose_config("evaluate", [*common, "attack=chen2023", "attack.eps=0.01", f"attack.steps={args.eval_steps}"]),
                        Path(args.work) / f"eval_{folder(name)}")
    noise = evaluate(compose_config("evaluate", [*common, "attack=noise", "attack.eps=0.01"]),
                     Path(args.work) / f"noise_{folder(name)}")
    return {
        "adv/delta_psnr": attacked["test/adv/delta_psnr"],
        "noise/delta_psnr": noise["test/adv/delta_psnr"],
        "clean/psnr": attacked["test/clean/psnr"],
        "clean/bpp": attacked["test/clean/bpp"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None,
                        help="codec to start from (a checkpoint of this project or a CompressAI state dict); "
                        "without it, a zoo --model starts from CompressAI's pretrained weights")
    parser.add_argument("--model", default="tiny", help="model config (conf/model/): tiny, cheng2020, mbt2018, ...")
    parser.add_argument("--data", default="samples", help="data config: samples (bundled photos), kodak, folder")
    parser.add_argument("--steps", type=int, default=300, help="finetuning batches per recipe")
    parser.add_argument("--paper-inner", type=int, default=30, help="chen2023 inner steps per batch (paper: 300)")
    parser.add_argument("--cheap-inner", type=int, default=2, help="PGD inner steps per batch")
    parser.add_argument("--eval-steps", type=int, default=200, help="chen2023 steps of the evaluation attack (paper: 1001)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the model config's")
    parser.add_argument("--patch-size", type=int, default=None, help="default: the model config's")
    parser.add_argument("--lr", type=float, default=None,
                        help="default: 1e-4 for model=tiny (small codecs move slowly at 1e-5), else the paper's 1e-5")
    parser.add_argument("--quality", type=int, default=None,
                        help="model.quality of the checkpoint (its lambda for finetuning); default: the model config's")
    parser.add_argument("--consistency", default="0,1",
                        help="train.consistency_weight of the cheap recipe; a list runs one cheap row per value")
    parser.add_argument("--fast-ratio", default="0.4",
                        help="train.adv_ratio of the fast recipe (one PGD step); a list runs one fast row per value")
    parser.add_argument("--fast-reference", default="source",
                        help="attack.reference of the fast recipe: source (its default) and/or recon (one more row each)")
    parser.add_argument("--recipes", default="plain,paper,cheap", help="which recipes to run, in this order (plain, paper, cheap, fast)")
    parser.add_argument("--extra", nargs="*", default=[], help="Hydra overrides added to every adversarial recipe")
    parser.add_argument("--max-images", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="outputs/bench_finetune")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.checkpoint is None and args.model == "tiny":
        parser.error("model=tiny has no pretrained weights: pass --checkpoint (e.g. outputs/default/checkpoints/last.ckpt)")
    lr = args.lr if args.lr is not None else (1e-4 if args.model == "tiny" else 1e-5)
    torch.set_num_threads(args.threads)
    print(f"device={args.device} threads={args.threads} steps={args.steps} model={args.model} quality={args.quality} "
          f"data={args.data} lr={lr}")

    # The recipes users run (conf/experiment/), with the bench's length, lr and eps warm-up.
    optim = [f"optim.lr={lr}", "optim.scheduler=none", "optim.entropy_lr_mult=1.0"]
    shared = [*optim, "attack.eps=0.01", f"attack.warmup_steps={max(1, args.steps // 6)}"]
    recipes = {
        "plain": ["attack=none", "attack.eps=null", *optim],
        "paper": ["experiment=finetune_tiny", f"attack.steps={args.paper_inner}", *shared, *args.extra],
    }
    for weight in args.consistency.split(","):
        # Cheap: a few PGD steps (random start, budget-sized steps, the paper's skip proxy); with a
        # consistency weight, attacked reconstructions are also pulled to the clean ones (beyond the paper).
        name = "cheap" if float(weight) == 0 else f"cheap+c{weight}"
        recipes[name] = ["experiment=finetune_cheap", f"attack.steps={args.cheap_inner}",
                         f"train.consistency_weight={weight}", *shared, *args.extra]
    for ratio in args.fast_ratio.split(","):
        for reference in args.fast_reference.split(","):
            # Fast: one budget-sized PGD step from a random start on a share of each batch (FGSM-RS).
            name = f"fast@{ratio}" + ("" if reference == "source" else f"/{reference}")
            recipes[name] = ["experiment=finetune_fast", f"train.adv_ratio={ratio}", f"attack.reference={reference}",
                             *shared, *args.extra]
    wanted = args.recipes.split(",")
    # In the order asked for: a ratio is fairest between recipes run back to back (shared machines drift).
    recipes = {k: v for name in wanted for k, v in recipes.items() if k.split("+")[0].split("@")[0] == name}
    before = robustness(args, args.checkpoint, "before")
    print(f"before: {before}")
    rows = {"before": before}
    for name, overrides in recipes.items():
        checkpoint, step_s, total_s = finetune(args, name, overrides)
        rows[name] = robustness(args, checkpoint, name) | {"s_per_step": step_s, "train_s": total_s}
        print(f"{name}: {rows[name]}")

    plain_step = rows["plain"]["s_per_step"] if "plain" in rows else float("nan")
    gap = before["adv/delta_psnr"] - before["noise/delta_psnr"]
    print(f"\n{'recipe':>10} {'adv dPSNR':>10} {'noise dPSNR':>11} {'gap closed':>10} {'clean PSNR':>10} {'bpp':>7} {'step/plain':>10} {'train s':>8}")
    for name, row in rows.items():
        closed = (before["adv/delta_psnr"] - row["adv/delta_psnr"]) / gap if gap else float("nan")
        row["gap_closed"] = closed
        row["step_ratio"] = row.get("s_per_step", float("nan")) / plain_step
        print(f"{name:>10} {row['adv/delta_psnr']:10.2f} {row['noise/delta_psnr']:11.2f} {closed:10.2f} "
              f"{row['clean/psnr']:10.2f} {row['clean/bpp']:7.3f} {row['step_ratio']:10.2f} {row.get('train_s', float('nan')):8.1f}")
    for name in [k for k in rows if k.startswith("cheap")] if "paper" in rows else []:
        print(f"{name} vs paper robustness: {rows[name]['adv/delta_psnr'] - rows['paper']['adv/delta_psnr']:+.2f} dB "
              f"(target <= +1), training-time ratio {rows[name]['s_per_step'] / rows['paper']['s_per_step']:.3f} (target <= 0.2)")
    for name in [k for k in rows if k.startswith("fast")] if "paper" in rows else []:
        more_robust = rows[name]["adv/delta_psnr"] <= rows["paper"]["adv/delta_psnr"]
        print(f"{name}: step/plain {rows[name]['step_ratio']:.2f} (target <= 1.5); attacked delta_psnr "
              f"{rows[name]['adv/delta_psnr']:.2f} vs paper {rows['paper']['adv/delta_psnr']:.2f} dB "
              f"({'at least as robust' if more_robust else 'LESS robust'}; target: at least as robust); clean "
              f"{rows[name]['clean/psnr'] - rows['paper']['clean/psnr']:+.2f} dB, bpp {rows[name]['clean/bpp'] - rows['paper']['clean/bpp']:+.3f} vs paper")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
