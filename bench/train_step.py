"""Training step of train.py vs a plain PyTorch loop doing the same math (target: <= 1.10).

    python bench/train_step.py [--models tiny bmshj2018_hyperprior] [--batches 30] [--threads 1]

For each codec config (random init; `bmshj2018_hyperprior` at quality 3, the zoo's channels), on the
model config's batch of training crops: median seconds per batch of the real train.py job (Lightning
module, logging every step as configured, gradient clipping, CompressAI's two optimizers, lr schedule,
progress bar; validation off) and of CompressAI's examples/train.py step written out by hand (forward,
RD loss, backward with the aux loss, network grad-norm clip, both optimizer steps) on the same batches.
Two ratios of medians: `step` times each batch from its start to its end (no data loading), `whole`
from one batch's start to the next's (data loading, logging, every Lightning hook in between). Warm-up
batches are skipped. The two run alternately (plain, ours, plain, ours) so machine load hits both alike.
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
from robust_nic.settings import group_settings  # noqa: E402
from robust_nic.training import train  # noqa: E402

TARGET = 1.10
WARMUP = 3


def overrides(model: str, batches: int) -> list[str]:
    extra = ["model.quality=3", "model.pretrained=false"] if model != "tiny" else []
    return [f"model={model}", *extra, f"trainer.max_steps={batches}", f"trainer.val_check_interval={batches}",
            "trainer.limit_val_batches=0", "trainer.accelerator=cpu", "data.num_workers=0", "logger=csv"]  # fmt: skip


class WholeBatchTimer(StepTimer):
    """StepTimer plus the time from each batch's start to the next one's."""

    def __init__(self):
        super().__init__()
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self.starts.append(self._start)


def ours(model: str, batches: int, work: Path) -> tuple[list[float], list[float]]:
    timer = WholeBatchTimer()
    run_dir = Path(tempfile.mkdtemp(dir=work))
    train(compose_config("train", overrides(model, batches)), run_dir, extra_callbacks=[timer])
    whole = [b - a for a, b in zip(timer.starts, timer.starts[1:], strict=False)]
    return timer.seconds[WARMUP:], whole[WARMUP:]


def plain(model: str, batches: int) -> tuple[list[float], list[float]]:
    """CompressAI's examples/train.py step on the same codec config and batches."""
    settings = resolve(compose_config("train", overrides(model, batches)))
    codec = codec_from_settings(settings).train()
    groups, aux_params = split_parameters(codec, settings["optim"]["entropy_lr_mult"])
    lr = float(settings["optim"]["lr"])
    for group in groups:
        group["lr"] = lr * group.pop("lr_mult")
    optimizer = torch.optim.Adam(groups, lr=lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=float(settings["optim"]["aux_lr"]))
    network = [p for group in groups for p in group["params"]]
    loss_fn = RateDistortionLoss(settings["loss"]["metric"], settings["loss"]["lmbda"])
    data = ImageDataModule(group_settings(settings, "data"))
    data.setup("fit")
    seconds, starts = [], []
    for index, x in enumerate(data.train_dataloader()):
        if index == batches:
            break
        start = time.perf_counter()
        starts.append(start)
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        out = codec(x)
        loss = loss_fn(out, x)["loss"]
        (loss + codec.aux_loss()).backward()
        torch.nn.utils.clip_grad_norm_(network, float(settings["optim"]["clip"]))
        optimizer.step()
        aux_optimizer.step()
        seconds.append(time.perf_counter() - start)
    whole = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    return seconds[WARMUP:], whole[WARMUP:]


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
        times = {(who, kind): [] for who in ("plain", "ours") for kind in ("step", "whole")}
        for _ in range(2):
            for who, (step, whole) in (("plain", plain(model, args.batches)), ("ours", ours(model, args.batches, work))):
                times[(who, "step")] += step
                times[(who, "whole")] += whole
        for kind in ("step", "whole"):
            plain_s, ours_s = (statistics.median(times[(who, kind)]) for who in ("plain", "ours"))
            ratio = ours_s / plain_s
            verdict = "met" if ratio <= TARGET else "NOT met"
            print(f"{model:22s} {kind:5s} plain {plain_s * 1e3:8.1f} ms  train.py {ours_s * 1e3:8.1f} ms  "
                  f"ratio {ratio:.3f}  (target <= {TARGET}: {verdict})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
