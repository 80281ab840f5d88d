"""Images per second of an evaluation's work, batched against one image at a time, side by side in one run
(a benchmark, not a test). It runs the evaluation runner's own per-batch work (Evaluation.batch_rows:
clean coding, the attack with each image's own seed, real coding of the adversarial images, the rows).

    python bench/batched_evaluation.py [--steps 5] [--images 4] [--attack chen2023] [--threads 1]
        [--device cpu] [--out results.json]

For the tiny codec (bmshj2018-hyperprior, 64/96 channels) and a zoo-size one (bmshj2018-hyperprior
quality 3, 128/192 channels, random weights: the same cost as the pretrained ones) at 256x256 and
768x512, it prints images/s one at a time (eval.batch_size=1), images/s as one batch of --images
(eval.batch_size=--images), their ratio, and how far the batched rows are from the one-at-a-time ones:
how many images have a bit-identical bitstream size (adv/bpp), the largest adv/psnr_in difference (dB: the
adversarial images), and the largest difference of any other measured column. Thread count is pinned
(--threads) and printed; --out writes the rows as JSON (for bench/record_result.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from robust_nic.attacks import build_attack, with_defaults
from robust_nic.codecs import build_codec
from robust_nic.data import sample_photos
from robust_nic.defenses import build_defense
from robust_nic.evaluation.metric_keys import attack_budgets
from robust_nic.evaluation.runner import Evaluation
from robust_nic.images import read_image
from robust_nic.settings import SAMPLE_HELDOUT, SAMPLE_TRAIN

SIZES = {"256x256": (256, 256), "768x512": (512, 768)}  # width x height: (H, W)


def crops(height: int, width: int, count: int) -> torch.Tensor:
    """`count` different photo crops of one size (photos tiled when smaller than the crop)."""
    images = []
    for path in sample_photos(SAMPLE_TRAIN + SAMPLE_HELDOUT):
        x = read_image(path)
        reps = (1, -(-height // x.shape[1]), -(-width // x.shape[2]))
        images.append(x.repeat(*reps)[:, :height, :width])
        if len(images) == count:
            break
    return torch.stack(images)


def codecs() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    built = {
        "tiny (64/96)": build_codec("bmshj2018-hyperprior", 3, "mse", channels=[64, 96]),
        "zoo-size q3 (128/192)": build_codec("bmshj2018-hyperprior", 3, "mse"),
    }
    for codec in built.values():
        codec.eval().update(force=True)
    return built


def evaluation(codec, attack_cfg: dict, count: int, run_dir: Path) -> tuple[Evaluation, list[Path]]:
    """The runner's Evaluation of `codec` (no defense, no saved images) for `count` named crops."""
    settings = {"attack": attack_cfg, "defense": {"name": "none"}, "save_images": False}
    defense = build_defense(settings["defense"], codec)
    paths = [Path(f"crop{i}.png") for i in range(count)]  # names only: each image's seed comes from it
    budgets = attack_budgets(attack_cfg)
    attacks = {"adv": (build_attack(attack_cfg), codec)}
    work = Evaluation(settings, codec, defense, attacks, budgets, paths, run_dir)
    return work, paths


def differences(single: list[dict], batched: list[dict]) -> dict:
    """How far batched rows are from one-at-a-time ones (wall-clock columns left out)."""
    measured = [k for k in single[0] if "/" in k and not k.endswith("_s")]
    worst = {k: max(abs(a[k] - b[k]) for a, b in zip(single, batched, strict=True)) for k in measured}
    return {
        "identical bpp": f"{sum(a['adv/bpp'] == b['adv/bpp'] for a, b in zip(single, batched, strict=True))}/{len(single)}",
        "max psnr_in diff (dB)": worst["adv/psnr_in"],
        "max other diff": max(v for k, v in worst.items() if k not in ("adv/bpp", "adv/psnr_in")),
        "worst column": max((k for k in worst if k not in ("adv/bpp", "adv/psnr_in")), key=worst.get),
    }


def synced(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, work: Evaluation, paths: list[Path], x: torch.Tensor, batched: bool):
    """(seconds, each image's row): the images as one batch, or one at a time."""
    synced(device)
    start = time.perf_counter()
    if batched:
        rows = [rows[0] for rows in work.batch_rows(list(range(len(x))), paths, x)]
    else:
        rows = [work.batch_rows([i], paths[i : i + 1], x[i : i + 1])[0][0] for i in range(len(x))]
    synced(device)
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--attack", default="chen2023", help="chen2023 (zero start) or pgd (random start)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    attack_cfg = with_defaults({"name": args.attack, "eps": 0.01, "steps": args.steps})
    print(f"threads {args.threads}, device {device}, attack {args.attack} {args.steps} steps, batch of {args.images}")
    results = []
    with tempfile.TemporaryDirectory() as run_dir:
        for name, codec in codecs().items():
            codec.to(device)
            work, paths = evaluation(codec, attack_cfg, args.images, Path(run_dir))
            for size, (height, width) in SIZES.items():
                x = crops(height, width, args.images).to(device)
                work.batch_rows([0], paths[:1], x[:1])  # warm-up
                single_s, singles = timed(device, work, paths, x, batched=False)
                batched_s, batched = timed(device, work, paths, x, batched=True)
                row = {"codec": name, "size": size, "single img/s": len(x) / single_s,
                       "batched img/s": len(x) / batched_s, "batched/single": single_s / batched_s}  # fmt: skip
                row |= differences(singles, batched)
                results.append(row)
                print(" | ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                      flush=True)  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
