"""The price of checkpoints you can trust: seconds per last.ckpt save beside seconds per training batch.

    python bench/checkpoint_cost.py [--models tiny bmshj2018_hyperprior cheng2020] [--saves 5] [--threads 1]

For each codec config (random init at quality 3, the model config's batch of crops), a short train.py run;
at its end the very save LastCheckpoint makes (write to a partial file, fsync, rename over last.ckpt) is
timed `--saves` times, beside the median training batch of the same run. Printed: checkpoint size,
median seconds per save, save / batch (how many batches one save costs) and the share of a training hour
spent saving at checkpoint.every_minutes=10 (6 saves an hour). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune import StepTimer  # noqa: E402

from robust_nic.checkpoints import LAST, save_atomically  # noqa: E402
from robust_nic.config import compose_config  # noqa: E402
from robust_nic.training import train  # noqa: E402

WARMUP = 3


class SaveTimer(Callback):
    """Times the last.ckpt save at the end of training, `saves` times."""

    def __init__(self, saves: int):
        self.saves, self.seconds, self.bytes = saves, [], 0

    def on_train_end(self, trainer, pl_module) -> None:
        path = Path(trainer.default_root_dir) / "bench_saves" / LAST
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(self.saves):
            start = time.perf_counter()
            save_atomically(trainer, path)
            self.seconds.append(time.perf_counter() - start)
        self.bytes = path.stat().st_size


def measure(model: str, batches: int, saves: int, work: Path) -> dict:
    overrides = [f"model={model}", f"trainer.max_steps={batches}", "trainer.val_check_interval=100000",
                 "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "logger=none",
                 "checkpoint.every_minutes=null", "model.pretrained=false"]  # fmt: skip
    if model != "tiny":
        overrides.append("model.quality=3")
    steps, saver = StepTimer(), SaveTimer(saves)
    train(compose_config("train", overrides), Path(tempfile.mkdtemp(dir=work)), extra_callbacks=[steps, saver])
    batch = statistics.median(steps.seconds[WARMUP:])
    save = statistics.median(saver.seconds)
    return {"model": model, "checkpoint_mb": saver.bytes / 2**20, "save_s": save, "batch_s": batch,
            "save_per_batch": save / batch, "hour_share_at_10_min": 6 * save / 3600}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "bmshj2018_hyperprior", "cheng2020"])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_checkpoint_cost_"))
    print(f"threads {args.threads}; {args.batches} batches (first {WARMUP} skipped), {args.saves} saves each")
    rows = []
    for model in args.models:
        row = measure(model, args.batches, args.saves, work)
        rows.append(row)
        print(f"{model:22s} checkpoint {row['checkpoint_mb']:7.1f} MB  save {row['save_s']:6.3f} s  "
              f"batch {row['batch_s']:6.3f} s  save/batch {row['save_per_batch']:6.2f}  "
              f"share of a training hour at every_minutes=10: {100 * row['hour_share_at_10_min']:.3f} %", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
