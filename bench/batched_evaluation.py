"""Images per second of an evaluation's work (attack, then real coding of the adversarial image), batched
against one image at a time, side by side in one run (a benchmark, not a test).

    python bench/batched_evaluation.py [--steps 5] [--images 4] [--threads 1] [--device cpu]

For the tiny codec (bmshj2018-hyperprior, 64/96 channels) and a zoo-size one (bmshj2018-hyperprior
quality 3, 128/192 channels, random weights: the same cost as the pretrained ones) at 256x256 and
768x512, it prints images/s one at a time, images/s as one batch of --images, their ratio, and how far
the batched results are from the one-at-a-time ones: the largest difference of the adversarial images
(in 8-bit levels), how many images have a bit-identical bitstream size (bpp), and the largest bpp_est
difference. The attack is the paper's (chen2023: zero start, no random draws), so a difference can only
come from the batch changing floating-point sums. Thread count is pinned (--threads) and printed.
"""

from __future__ import annotations

import argparse
import time

import torch

from robust_nic.attacks import build_attack, with_defaults
from robust_nic.codecs import build_codec
from robust_nic.coding import code
from robust_nic.data import SAMPLE_HELDOUT, SAMPLE_TRAIN, sample_photos
from robust_nic.images import read_image

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


def run(codec, attack, x: torch.Tensor) -> tuple[torch.Tensor, object]:
    x_adv = attack(codec, x)
    return x_adv, code(codec, x_adv)


def synced(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    attack = build_attack(with_defaults({"name": "chen2023", "eps": 0.01, "steps": args.steps}))
    print(f"threads {args.threads}, device {device}, attack chen2023 {args.steps} steps, batch of {args.images}")
    print("codec | size | single img/s | batched img/s | batched/single | max |x_adv diff| (8-bit levels) | "
          "identical bpp | max bpp_est diff")  # fmt: skip
    for name, codec in codecs().items():
        codec.to(device)
        for size, (height, width) in SIZES.items():
            x = crops(height, width, args.images).to(device)
            run(codec, attack, x[:1])  # warm-up
            synced(device)
            start = time.perf_counter()
            singles = [run(codec, attack, x[i : i + 1]) for i in range(len(x))]
            synced(device)
            single_s = time.perf_counter() - start
            start = time.perf_counter()
            x_adv, coded = run(codec, attack, x)
            synced(device)
            batched_s = time.perf_counter() - start
            levels = max(float((x_adv[i] - s[0][0]).abs().max()) * 255 for i, s in enumerate(singles))
            same_bpp = sum(float(coded.bpp[i]) == float(s[1].bpp[0]) for i, s in enumerate(singles))
            est = max(abs(float(coded.bpp_est[i]) - float(s[1].bpp_est[0])) for i, s in enumerate(singles))
            print(f"{name} | {size} | {len(x) / single_s:.3f} | {len(x) / batched_s:.3f} | "
                  f"{single_s / batched_s:.2f} | {levels:.0f} | {same_bpp}/{len(x)} | {est:.2g}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
