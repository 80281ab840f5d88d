"""Training step of train.py vs a plain PyTorch loop doing the same math (issue 13 target 1: <= 1.10).

    python bench/train_step.py [--models tiny bmshj2018_hyperprior] [--batches 30] [--threads 1]

For each codec config (random init; `bmshj2018_hyperprior` at quality 3, the zoo's channels), on the
model config's batch of training crops: median seconds per batch of the real train.py job (Lightning
module, logging every step as configured, gradient clipping, CompressAI's two optimizers, lr schedule,
progress bar; validation off) and of CompressAI's examples/train.py step written out by hand (forward,
RD loss, backward with the aux loss, network grad-norm clip, both optimizer steps) on the same batches.
Both exclude data loading (timed from batch start to batch end); warm-up batches are skipped. The two
run alternately (plain, ours, plain, ours) so machine load hits both alike; the ratio is of the medians.
A benchmark, not a test: it prints the ratio and the target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune import StepTimer  # noqa: E402

from robust_nic.config import codec_from_settings, compose_config, resolve  # noqa: E402
from robust_nic.data import ImageDataModule  # noqa: E402
from robust_nic.losses import RateDistortionLoss  # noqa: E402
from robust_nic.module import split_parameters  # noqa: E402
from robust_nic.training import train  # noqa: E402

TARGET = 1.10
WARMUP = 3


def overrides(model: str, batches: int) -> list[str]:
    extra = ["model.quality=3", "model.pretrained=false"] if model != "tiny" else []
    return [f"model={model}", *extra, f"trainer.max_steps={batches}", f"trainer.val_check_interval={batches}",
            "trainer.limit_val_batches=0", "trainer.accelerator=cpu", "data.num_workers=0", "logger=csv"]  # fmt: skip


def ours(model: str, batches: int, work: Path) -> list[float]:
    timer = StepTimer()
    run_dir = Path(tempfile.mkdtemp(dir=work))
    train(compose_config("train", overrides(model, batches)), run_dir, extra_callbacks=[timer])
    return timer.seconds[WARMUP:]


def plain(model: str, batches: int) -> list[float]:
    """CompressAI's examples/train.py step on the same codec config and batches."""
    settings = resolve(compose_config("train", overrides(model, batches)))
    codec = codec_from_settings(settings["model"]).train()
    groups, aux_params = split_parameters(codec, settings["optim"]["entropy_lr_mult"])
    lr = float(settings["optim"]["lr"])
    for group in groups:
        group["lr"] = lr * group.pop("lr_mult")
    optimizer = torch.optim.Adam(groups, lr=lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=float(settings["optim"]["aux_lr"]))
    network = [p for group in groups for p in group["params"]]
    loss_fn = RateDistortionLoss(settings["loss"]["metric"], settings["loss"]["lmbda"])
    data = ImageDataModule(settings["data"])
    data.setup("fit")
    seconds = []
    for index, x in enumerate(data.train_dataloader()):
        if index == batches:
            break
        start = time.perf_counter()
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        out = codec(x)
        loss = loss_fn(out, x)["loss"]
        (loss + codec.aux_loss()).backward()
        torch.nn.utils.clip_grad_norm_(network, float(settings["optim"]["clip"]))
        optimizer.step()
        aux_optimizer.step()
        seconds.append(time.perf_counter() - start)
    return seconds[WARMUP:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "bmshj2018_hyperprior"])
    parser.add_argument("--batches", type=int, default=30, help="batches per block (two blocks each)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_train_step_"))
    print(f"threads {args.threads}; {args.batches} batches per block, first {WARMUP} skipped; target <= {TARGET}")
    for model in args.models:
        times = {"plain": [], "ours": []}
        for _ in range(2):
            times["plain"] += plain(model, args.batches)
            times["ours"] += ours(model, args.batches, work)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["ours"] / med["plain"]
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(f"{model:22s} plain {med['plain'] * 1e3:8.1f} ms  train.py {med['ours'] * 1e3:8.1f} ms  "
              f"ratio {ratio:.3f}  (target <= {TARGET}: {verdict})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
