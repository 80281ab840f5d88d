"""The picture of the README and the documentation's home page, from a finished quickstart run.

    python docs/scripts/quickstart_figure.py [--run outputs/quickstart] [--image chelsea] [--out docs/images/quickstart_chelsea.png]

Reads the quickstart's trained codec (RUN/checkpoints/last.ckpt), the held-out photo, the adversarial PNG the
evaluation saved (RUN/eval/images/IMAGE*.png) and that image's row of RUN/eval/per_image.csv; codes the source
and the adversarial image with the real entropy coder and draws source, clean reconstruction and attacked
reconstruction side by side, titled with the row's numbers (bitstream bpp, PSNR against the source,
delta_psnr).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from robust_nic.codecs import load_codec_checkpoint  # noqa: E402
from robust_nic.coding import code  # noqa: E402
from robust_nic.data import sample_photos  # noqa: E402
from robust_nic.images import read_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="outputs/quickstart")
    parser.add_argument("--image", default="chelsea")
    parser.add_argument("--out", default="docs/images/quickstart_chelsea.png")
    args = parser.parse_args()
    run = Path(args.run)
    rows = list(csv.DictReader((run / "eval" / "per_image.csv").open()))
    row = next(r for r in rows if Path(r["image"]).stem == args.image and r.get("kind", "adv") in ("adv", ""))
    source_path = next(p for p in sample_photos(["chelsea.png", "coffee.png", "rocket.jpg"]) if p.stem == args.image)
    adversarial_path = min((run / "eval" / "images").glob(f"{args.image}*.png"), key=lambda p: len(p.name))
    codec = load_codec_checkpoint("bmshj2018-hyperprior", run / "checkpoints" / "last.ckpt")
    x = read_image(source_path)[None]
    x_adv = read_image(adversarial_path)[None]
    with torch.no_grad():
        clean, attacked = code(codec, x, update=True), code(codec, x_adv)

    def number(key: str) -> float:
        return float(row[key])

    panels = [
        (x, f"source {args.image}"),
        (clean.x_hat, f"clean reconstruction\n{number('clean/bpp'):.3f} bpp, {number('clean/psnr'):.2f} dB"),
        (attacked.x_hat, f"attacked reconstruction (input PSNR {number('adv/psnr_in'):.1f} dB)\n"
         f"{number('adv/bpp'):.3f} bpp, {number('adv/psnr'):.2f} dB, delta_psnr {number('adv/delta_psnr'):.2f} dB"),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(15, 3.9))
    for axis, (image, title) in zip(axes, panels, strict=True):
        axis.imshow(image[0].clamp(0, 1).permute(1, 2, 0).numpy())
        axis.set_title(title, fontsize=11)
        axis.axis("off")
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=80, bbox_inches="tight")
    print(f"{args.out}: {panels[1][1]!r}, {panels[2][1]!r}")


if __name__ == "__main__":
    main()
