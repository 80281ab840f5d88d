"""How strong is each candidate inner (training) attack, and what does it cost? (a benchmark, not a test)

    python bench/inner_attack_strength.py --checkpoint outputs/default/checkpoints/last.ckpt

On random 64x64 crops of the training photos (what finetuning attacks), for each attack: delta_psnr
through the real codec (eval-mode rounding) = PSNR(x, x_adv) - PSNR(x_hat, x_hat_adv) over the whole
batch, and its seconds relative to one chen2023 x100 run measured in the same process.
"""

from __future__ import annotations

import argparse
import time

import torch

from robust_nic.attacks import build_attack
from robust_nic.codecs import load_codec_checkpoint
from robust_nic.data import split_files
from robust_nic.images import read_image
from robust_nic.reconstruction import rounded_reconstruction
from robust_nic.settings import DataSettings

CANDIDATES = {
    "noise": {"name": "noise"},
    "pgd x2 ste, eps/4 steps": {"name": "pgd", "steps": 2, "proxy": "ste", "alpha": 0.0025},
    "pgd x2 ste": {"name": "pgd", "steps": 2, "proxy": "ste"},
    "pgd x2 skip (finetune_cheap)": {"name": "pgd", "steps": 2, "proxy": "skip"},
    "pgd x4 skip": {"name": "pgd", "steps": 4, "proxy": "skip"},
    "pgd x10 skip": {"name": "pgd", "steps": 10, "proxy": "skip"},
    "chen2023 x10": {"name": "chen2023", "steps": 10},
    "chen2023 x30 (bench paper recipe)": {"name": "chen2023", "steps": 30},
    "chen2023 x100": {"name": "chen2023", "steps": 100},
}


def training_crops(count_per_photo: int, size: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    crops = []
    for path in split_files(DataSettings(name="samples"))["train"]:
        image = read_image(path)
        for _ in range(count_per_photo):
            top = int(torch.randint(0, image.shape[1] - size, (1,), generator=generator))
            left = int(torch.randint(0, image.shape[2] - size, (1,), generator=generator))
            crops.append(image[:, top : top + size, left : left + size])
    return torch.stack(crops)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean().clamp_min(1e-10)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--arch", default="bmshj2018-hyperprior")
    parser.add_argument("--crops-per-photo", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = load_codec_checkpoint(args.arch, args.checkpoint)
    x = training_crops(args.crops_per_photo)
    x_hat = rounded_reconstruction(codec, x)
    rows = {}
    for name, cfg in CANDIDATES.items():
        attack = build_attack({"eps": 0.01, **cfg})
        start = time.perf_counter()
        x_adv = attack(codec, x)
        seconds = time.perf_counter() - start
        rows[name] = (psnr(x, x_adv) - psnr(x_hat, rounded_reconstruction(codec, x_adv)), seconds)
    reference = rows["chen2023 x100"][1]
    print(f"{len(x)} crops 64x64, eps 0.01 rms\n{'attack':>38} {'delta_psnr':>10} {'time / chen2023 x100':>21}")
    for name, (delta, seconds) in rows.items():
        print(f"{name:>38} {delta:10.2f} {seconds / reference:21.3f}")


if __name__ == "__main__":
    main()
