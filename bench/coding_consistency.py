"""Is real coding consistent on this device? Codes every held-out photo N times and counts mismatches.

    python bench/coding_consistency.py --checkpoint outputs/default/checkpoints/last.ckpt --device cuda [--repeats 20]
    python bench/coding_consistency.py --checkpoint ... --device cuda --no-fix    # without the deterministic kernels

On GPU, the hyperprior's entropy parameters computed by compress and again by decompress can differ
(non-deterministic cuDNN kernels, TF32), and the range decoder then desynchronises (https://github.com/InterDigitalInc/CompressAI/issues/54:
garbage or NaN PSNR on a few images). `robust_nic.coding.code` runs with deterministic kernels and checks
that the decoder's latents equal the encoder's. Per photo this prints:
- self-check failures: repeats where the decoded symbols or latents differ from the encoded ones;
- recon differs: repeats whose 8-bit reconstruction differs from the first repeat's;
- stream differs: repeats whose bitstream differs from the first repeat's (non-deterministic encoder);
- the PSNR range over the repeats that decoded.
`--no-fix` keeps the process's kernel settings (torch defaults) instead of the deterministic ones; the
self-check still runs, so its failures are what the fix prevents. Without --checkpoint a freshly built
(untrained) codec of --arch/--quality is used: weaker evidence, the scales of a random hyperprior are
not those of a trained one.
"""

from __future__ import annotations

import argparse
import time

import torch

from robust_nic.codecs import build_codec, load_codec_checkpoint
from robust_nic.coding import CodingMismatchError, code
from robust_nic.data import sample_photos
from robust_nic.images import read_image
from robust_nic.metrics import psnr
from robust_nic.settings import SAMPLE_HELDOUT


def consistency(codec, x: torch.Tensor, repeats: int, deterministic: bool) -> dict:
    failures, recon_differs, stream_differs, psnrs, first = 0, 0, 0, [], None
    for _ in range(repeats):
        try:
            coded = code(codec, x, deterministic=deterministic)
        except CodingMismatchError:
            failures += 1
            continue
        psnrs.append(float(psnr(x, coded.x_hat.to(x))))
        if first is None:
            first = coded
            continue
        recon_differs += int(not torch.equal(coded.x_hat, first.x_hat))
        stream_differs += int(coded.strings != first.strings)
    return {
        "failures": failures,
        "recon_differs": recon_differs,
        "stream_differs": stream_differs,
        "psnr_min": min(psnrs, default=float("nan")),
        "psnr_max": max(psnrs, default=float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a trained codec (Lightning .ckpt or state dict)")
    parser.add_argument("--arch", default="bmshj2018-hyperprior")
    parser.add_argument("--quality", type=int, default=3, help="only without --checkpoint")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-fix", action="store_true", help="keep the process's kernel settings")
    args = parser.parse_args()

    if args.checkpoint:
        codec = load_codec_checkpoint(args.arch, args.checkpoint)
    else:
        torch.manual_seed(0)
        codec = build_codec(args.arch, args.quality)
    codec = codec.to(args.device).eval()
    codec.update(force=True)
    deterministic = not args.no_fix
    print(
        f"device={args.device} arch={args.arch} checkpoint={args.checkpoint or 'none (untrained)'} "
        f"repeats={args.repeats} fix={'on' if deterministic else 'off'} torch={torch.__version__}"
    )
    header = f"{'image':<12} {'size':>9} {'self-check failures':>19} {'recon differs':>13} {'stream differs':>14} {'PSNR dB min-max':>16}"
    print(header)
    print("-" * len(header))
    totals = {"failures": 0, "recon_differs": 0, "stream_differs": 0}
    start = time.perf_counter()
    for path in sample_photos(SAMPLE_HELDOUT):
        x = read_image(path)[None].to(args.device)
        row = consistency(codec, x, args.repeats, deterministic)
        for key in totals:
            totals[key] += row[key]
        size = f"{x.shape[-1]}x{x.shape[-2]}"
        psnr_range = f"{row['psnr_min']:.2f}-{row['psnr_max']:.2f}"
        print(
            f"{path.name:<12} {size:>9} {row['failures']:>19} {row['recon_differs']:>13} "
            f"{row['stream_differs']:>14} {psnr_range:>16}"
        )
    print("-" * len(header))
    print(
        f"{'total':<12} {'':>9} {totals['failures']:>19} {totals['recon_differs']:>13} "
        f"{totals['stream_differs']:>14}   ({time.perf_counter() - start:.0f} s)"
    )


if __name__ == "__main__":
    main()
