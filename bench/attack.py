"""Benchmark the attacks on one codec, side by side in one run (a benchmark, not a test).

    python bench/attack.py --checkpoint outputs/default/checkpoints/last.ckpt [--crop 256] [--device cpu]

Prints, at eps 0.01 (RMS; the paper's 40 dB budget) on the held-out sample photos: delta_psnr for
chen2023 (1001 steps), pgd at 50/100/200 steps and the random-noise baseline, and the seconds per
attack step divided by the seconds of one forward+backward pass of the same surrogate (the floor).
Targets: chen2023 beats noise by >= 10 dB; the best pgd reaches chen2023's delta_psnr in <= 1/5 of its
steps; per-step ratio <= 1.10. Thread count is pinned (--threads) and printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from robust_nic.attacks import build_attack  # noqa: E402
from robust_nic.codecs import load_codec_checkpoint  # noqa: E402
from robust_nic.coding import code  # noqa: E402
from robust_nic.config import compose_config  # noqa: E402
from robust_nic.data import sample_photos  # noqa: E402
from robust_nic.evaluation.attacked import attack_and_measure  # noqa: E402
from robust_nic.images import read_image  # noqa: E402
from robust_nic.reconstruction import Surrogate  # noqa: E402
from robust_nic.settings import SAMPLE_HELDOUT  # noqa: E402


def attack_cfg(name: str, **overrides) -> dict:
    from omegaconf import OmegaConf

    cfg = compose_config("evaluate", [f"attack={name}"]).attack
    return {**OmegaConf.to_container(cfg), **overrides}


def center_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if not size:
        return x
    height, width = x.shape[-2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return x[..., top : top + size, left : left + size]


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def floor_seconds(codec, x, proxy: str) -> float:
    """One forward + backward (input gradient) of the attack's surrogate: the cost floor of a step."""
    surrogate = Surrogate(codec, proxy)
    with surrogate.active():
        x = x.clone().requires_grad_(True)
        out = surrogate(x)
        loss = ((out["x_hat"] - x.detach()) ** 2).mean()
        torch.autograd.grad(loss, x)


def step_ratio(codec, x, cfg: dict, steps: int, repeats: int, device) -> tuple[float, float, float]:
    """Median seconds per attack step / median seconds of the floor, interleaved to share noise."""
    attack = build_attack({**cfg, "steps": steps, "restarts": 1})
    per_step, floor = [], []
    timed(lambda: floor_seconds(codec, x, cfg["proxy"]), device)  # warm-up
    for _ in range(repeats):
        per_step.append(timed(lambda: attack(codec, x), device) / steps)
        floor.append(statistics.median(timed(lambda: floor_seconds(codec, x, cfg["proxy"]), device) for _ in range(3)))
    step, base = statistics.median(per_step), statistics.median(floor)
    return step, base, step / base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--arch", default="bmshj2018-hyperprior")
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--crop", type=int, default=256, help="centre crop of each photo (0 = whole image)")
    parser.add_argument("--max-images", type=int, default=3)
    parser.add_argument("--chen-steps", type=int, default=1001)
    parser.add_argument("--pgd-steps", default="50,100,200")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timing-repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    codec = load_codec_checkpoint(args.arch, args.checkpoint).to(device).eval()
    codec.update(force=True)
    images = [center_crop(read_image(p)[None], args.crop).to(device) for p in sample_photos(SAMPLE_HELDOUT)[: args.max_images]]
    print(f"device={device} threads={args.threads} images={len(images)} crop={args.crop or 'none'} eps={args.eps}")

    settings = {
        "noise": attack_cfg("noise", eps=args.eps),
        "chen2023": attack_cfg("chen2023", eps=args.eps, steps=args.chen_steps),
    }
    pgd_steps = [int(s) for s in args.pgd_steps.split(",")]
    for steps in pgd_steps:
        settings[f"pgd@{steps}"] = attack_cfg("pgd", eps=args.eps, steps=steps)

    results: dict[str, dict] = {}
    class NoDefense:  # code through the one real coding path
        code = staticmethod(lambda x: code(codec, x))

    for label, cfg in settings.items():
        attack = build_attack(cfg)
        deltas, seconds = [], []
        for x in images:
            clean = code(codec, x)
            _, _, metrics = attack_and_measure(attack, codec, NoDefense, x, clean)
            deltas.append(metrics["delta_psnr"].item())
            seconds.append(metrics["attack_s"].item())
        results[label] = {"delta_psnr": statistics.mean(deltas), "attack_s": statistics.mean(seconds), "steps": cfg.get("steps")}
        print(f"{label:>10}: delta_psnr {results[label]['delta_psnr']:7.2f} dB   attack {results[label]['attack_s']:7.1f} s/img")

    timing = {}
    for label in ("chen2023", f"pgd@{pgd_steps[0]}"):
        step, base, ratio = step_ratio(codec, images[0], settings[label], steps=20, repeats=args.timing_repeats, device=device)
        timing[label] = {"s_per_step": step, "floor_s": base, "ratio": ratio}
        print(f"{label:>10}: {step * 1e3:8.2f} ms/step  floor {base * 1e3:8.2f} ms  ratio {ratio:.3f}")

    chen = results["chen2023"]["delta_psnr"]
    noise = results["noise"]["delta_psnr"]
    cheap = [s for s in pgd_steps if results[f"pgd@{s}"]["delta_psnr"] >= chen]
    summary = {
        "chen_minus_noise_db": chen - noise,
        "pgd_steps_reaching_chen": min(cheap) if cheap else None,
        "pgd_fraction_of_chen_steps": (min(cheap) / args.chen_steps) if cheap else None,
        "best_pgd_delta_psnr": max(results[f"pgd@{s}"]["delta_psnr"] for s in pgd_steps),
        "max_step_ratio": max(t["ratio"] for t in timing.values()),
    }
    print(f"\nchen2023 - noise: {summary['chen_minus_noise_db']:.2f} dB (target >= 10)")
    print(f"pgd steps reaching chen2023's delta_psnr: {summary['pgd_steps_reaching_chen']} "
          f"(fraction {summary['pgd_fraction_of_chen_steps']}; target <= 0.2)")
    print(f"per-step ratio: {summary['max_step_ratio']:.3f} (target <= 1.10)")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results, "timing": timing, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
