"""Where does an attack's damage come from: the smooth transform or latent rounding flips? (a diagnostic)

    python bench/damage_sources.py --checkpoint outputs/default/checkpoints/last.ckpt [--eps 0.003,0.01,0.03]

For each held-out photo (a --crop x --crop corner, CPU-sized) and each budget, crafts chen2023 (--steps,
the paper's skip proxy), draws the random-noise baseline at the same budget, and prints for each:
- real delta_psnr: PSNR(x, x_adv) - PSNR(x_hat, x_hat_adv) through the codec's own rounding (what
  evaluate.py reports, here without the 8-bit and bitstream steps);
- smooth delta_psnr: the same through g_s(g_a(.)) without quantization, i.e. the damage the transforms
  alone would do;
- flips: the share of rounded latents round(g_a(x)) that the perturbation changes, and the mean latent
  shift |g_a(x_adv) - g_a(x)| in quantization steps.
A latent shifted by d (< 1) crosses a rounding boundary with probability about |d|, so flip damage grows
like eps while the input error grows like eps^2: if flips dominate, real delta_psnr FALLS as eps rises
and sits far above the smooth one. Architectures that round around predicted means (mbt2018, cheng2020)
get the delta_psnr columns only.
"""

from __future__ import annotations

import argparse

import torch

from robust_nic.attacks import build_attack
from robust_nic.codecs import load_codec_checkpoint
from robust_nic.coding import pad
from robust_nic.data import split_files
from robust_nic.images import read_image
from robust_nic.metrics import psnr_from_mse
from robust_nic.reconstruction import rounded_reconstruction, smooth_reconstruction
from robust_nic.settings import DataSettings

ROUNDS_LATENTS_DIRECTLY = ("bmshj2018-factorized", "bmshj2018-hyperprior")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(psnr_from_mse(((a - b) ** 2).mean()))  # float values: no 8-bit rounding in this diagnostic


@torch.no_grad()
def latent_flips(codec, x: torch.Tensor, x_adv: torch.Tensor) -> tuple[float, float]:
    y, y_adv = codec.g_a(pad(x)[0]), codec.g_a(pad(x_adv)[0])
    return float((torch.round(y) != torch.round(y_adv)).float().mean()), float((y_adv - y).abs().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--arch", default="bmshj2018-hyperprior")
    parser.add_argument("--eps", default="0.003,0.01,0.03")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--max-images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = load_codec_checkpoint(args.arch, args.checkpoint).eval()
    photos = split_files(DataSettings(name="samples"))["test"][: args.max_images]
    print(f"{args.checkpoint}: chen2023 x{args.steps} (skip proxy), {args.crop}x{args.crop} crops, {args.threads} thread(s)")
    print(f"{'photo':>12} {'attack':>9} {'eps':>6} {'PSNR_in':>8} {'real dPSNR':>10} {'smooth dPSNR':>12} {'flips %':>8} {'mean |dy|':>9}")
    for path in photos:
        x = read_image(path)[None][..., : args.crop, : args.crop]
        x_hat, x_smooth = rounded_reconstruction(codec, x), smooth_reconstruction(codec, x)
        for eps, name in [(float(e), n) for e in args.eps.split(",") for n in ("chen2023", "noise")]:
            x_adv = build_attack({"name": name, "eps": eps, "steps": args.steps})(codec, x)
            psnr_in = psnr(x, x_adv)
            real = psnr_in - psnr(x_hat, rounded_reconstruction(codec, x_adv))
            smooth = psnr_in - psnr(x_smooth, smooth_reconstruction(codec, x_adv))
            flips, shift = latent_flips(codec, x, x_adv) if args.arch in ROUNDS_LATENTS_DIRECTLY else (float("nan"),) * 2
            print(f"{path.name:>12} {name:>9} {eps:6.3f} {psnr_in:8.2f} {real:10.2f} {smooth:12.2f} {100 * flips:8.2f} {shift:9.3f}")


if __name__ == "__main__":
    main()
