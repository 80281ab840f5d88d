"""Peak memory (RSS) of a default evaluate.py run against image size (a benchmark, not a test).

    python bench/memory.py [--megapixels 0.5 1 2 4] [--models tiny bmshj2018_hyperprior] [--out FILE]

For each codec and image size, runs the real `python evaluate.py` in a child process on one photo
(scikit-image's astronaut, resized) twice: clean only, and attacked (`attack=chen2023`, the paper's
optimiser, with 2 steps: memory does not grow with the step count), with the default outputs (PNGs
and figures). The child's peak resident set size comes from the kernel (os.wait4). Codecs have random
weights (memory does not depend on them). Prints a table, and per codec and mode a least-squares line
GB = a + b * MP with the size at which it reaches 8 GB: what `data.max_pixels` defaults from
(src/robust_nic/settings.py DataSettings.max_pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ARCHS = {"tiny": ("bmshj2018-hyperprior", [64, 96]), "bmshj2018_hyperprior": ("bmshj2018-hyperprior", None)}


def make_image(megapixels: float, folder: Path) -> Path:
    import skimage.data

    side = int(round((megapixels * 1e6) ** 0.5))
    photo = Image.fromarray(skimage.data.astronaut()).resize((side, side), Image.BICUBIC)
    path = folder / f"astronaut_{side}.png"
    photo.save(path)
    return path


def make_checkpoint(model: str, folder: Path) -> Path:
    import torch

    from robust_nic.codecs import build_codec, export_codec

    arch, channels = ARCHS[model]
    torch.manual_seed(0)
    return export_codec(build_codec(arch, 3, channels=channels), folder / f"{model}.pth.tar")


def peak_rss_gb(command: list[str], threads: int) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of a child process, from the kernel's accounting."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {child.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024**2, seconds  # ru_maxrss is in KiB on Linux


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    mp, gb = np.array(points).T
    slope, intercept = np.polyfit(mp, gb, 1)
    return float(intercept), float(slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[0.5, 1, 2, 4])
    parser.add_argument("--models", nargs="+", default=["tiny", "bmshj2018_hyperprior"], choices=sorted(ARCHS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget-gb", type=float, default=8.0)
    parser.add_argument("--out", default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"threads={args.threads}; peak RSS of `python evaluate.py` on one image; chen2023 x2 steps when attacked")
        print(f"{'model':22s} {'MP':>5s} {'mode':8s} {'peak GB':>8s} {'seconds':>8s}")
        for model in args.models:
            checkpoint = make_checkpoint(model, tmp)
            for megapixels in args.megapixels:
                folder = tmp / f"{model}_{megapixels}"
                folder.mkdir()
                make_image(megapixels, folder)
                for mode, extra in (("clean", []), ("attacked", ["attack=chen2023", "attack.steps=2", "attack.eps=0.01"])):
                    command = [
                        sys.executable, "evaluate.py", f"model={model}", f"model.checkpoint={checkpoint}",
                        "data=folder", f"data.root={folder}", "data.max_pixels=1000000000", "progress=false",
                        f"hydra.run.dir={tmp}/run_{model}_{megapixels}_{mode}", *extra,
                    ]  # fmt: skip
                    gb, seconds = peak_rss_gb(command, args.threads)
                    rows.append({"model": model, "megapixels": megapixels, "mode": mode, "peak_gb": gb, "seconds": seconds})
                    print(f"{model:22s} {megapixels:5.2f} {mode:8s} {gb:8.2f} {seconds:8.1f}", flush=True)
    print(f"\nlinear fit GB = a + b * MP, and the size where it reaches {args.budget_gb:g} GB:")
    for model in args.models:
        for mode in ("clean", "attacked"):
            points = [(r["megapixels"], r["peak_gb"]) for r in rows if r["model"] == model and r["mode"] == mode]
            a, b = fit(points)
            print(f"{model:22s} {mode:8s} a={a:.2f} GB  b={b:.2f} GB/MP  -> {(args.budget_gb - a) / b:.1f} MP")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
