"""Clean evaluation's coding vs CompressAI's evaluator, per image, side by side (target: <= 1.05).

    python bench/coding_vs_compressai.py [--checkpoint CKPT] [--arch A --quality Q] [--threads 1] [--repeats 7]
    python bench/coding_vs_compressai.py --arch elic2022-official --channels 64 96 --json OUT.json

The codecs outside CompressAI's zoo dict (ELIC, the checkerboard Cheng2020) and the variable-rate ones trained
here (no variable-rate hyper-latent bottleneck, which eval_model's load_checkpoint assumes) are reloaded as
CompressAI's own class with the same constructor arguments and `load_state_dict` of the exported file; the
variable-rate ones are coded by eval_model's `inference(model, x, vbr_stage=2, vbr_scale=Gain[rate])`, the
rate index model.quality selects.

For each held-out sample photo this times, in one process and alternating (ours, theirs, ours, ...):
- ours: what evaluate.py does per clean image: `robust_nic.coding.code(codec, x)` (8-bit input, pad, compress,
  decompress, decoder self-check, crop, bitstream bpp, bpp_est) plus `evaluation.measure.clean_metrics`
  (PSNR, MS-SSIM, rates);
- theirs: `compressai.utils.eval_model`'s per-image work, its own `inference(model, x)` function (pad,
  compress, decompress, unpad, PSNR and MS-SSIM on 8-bit values, bpp from the bitstream), on the codec
  exported with `robust_nic.codecs.export_codec` and reloaded by eval_model's own `load_checkpoint` (a second
  object with the same weights and CDF tables, as `python -m compressai.utils.eval_model checkpoint` gets it).
Image reading is not timed; each side reads the file with its own reader (equal values: checked).

Per image it prints both bpp (must be equal exactly: the same bitstream length), both PSNRs and whether the
8-bit reconstructions are identical. Both PSNRs are computed on 8-bit rounded values (CompressAI's
`compute_metrics` rounds org and rec to 0..255 first); CompressAI averages in float32, we in float64, so the
two can differ in the last float32 digits although the images are identical: the `exact` column is the PSNR
from the integer pixel values in float64, which ours must equal to 1e-6.

The ratio is sum over images of the median seconds (over the repeats) of ours / theirs; target <= 1.05.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

# eval_model sets torch.set_num_threads(1) at import; main() pins --threads afterwards.
import compressai.utils.eval_model.__main__ as eval_model
import torch

from robust_nic.codecs import build_codec, export_codec, load_codec_checkpoint
from robust_nic.coding import code
from robust_nic.data import sample_photos
from robust_nic.evaluation.measure import clean_metrics
from robust_nic.images import read_image
from robust_nic.settings import SAMPLE_HELDOUT

TARGET = 1.05


def compressai_class(codec) -> type:
    """The CompressAI class a registered codec of this project subclasses (or is)."""
    return next(c for c in type(codec).__mro__ if c.__module__.startswith("compressai."))


def their_model(arch: str, codec, path: Path):
    """(model, inference kwargs) as CompressAI's evaluator holds it: its own class, the exported weights."""
    vbr = hasattr(codec, "rate_index")
    if arch in eval_model.architectures and not vbr:
        return eval_model.load_checkpoint(arch, False, path), {}  # what eval_model's `checkpoint -p` does
    cls = compressai_class(codec)
    if vbr:
        model = cls(codec.N, codec.M, vr_entbttlnck=codec.vr_entbttlnck)
    elif hasattr(codec, "groups"):  # ELIC
        model = cls(codec.N, codec.M, groups=codec.groups)
    else:
        model = cls(codec.N)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    if not vbr:
        model.update(force=True)
        return model, {}
    scale = torch.abs(model.Gain[codec.rate_index]).detach()
    model.update(force=True, scale=scale if codec.vr_entbttlnck else None)
    return model, {"vbr_stage": 2, "vbr_scale": scale}


def ours(codec, x: torch.Tensor) -> dict:
    coded = code(codec, x)
    metrics = clean_metrics(x, coded)
    return {"bpp": float(metrics["bpp"][0]), "psnr": float(metrics["psnr"][0]), "x_hat": coded.x_hat[0]}


def theirs(model, x: torch.Tensor, **vbr) -> dict:
    out = eval_model.inference(model, x, **vbr)
    return {"bpp": out["bpp"], "psnr": out["psnr-rgb"]}


def exact_psnr(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """PSNR from the integer 8-bit values, in float64."""
    a, b = (x.double() * 255).round(), (x_hat.double() * 255).round()
    return 10 * math.log10(255**2 / ((a - b) ** 2).mean().item())


def their_reconstruction(model, x: torch.Tensor, **vbr) -> torch.Tensor:
    """CompressAI's decoded image (inference() does not return it): the same steps, 8-bit rounded."""
    from compressai.ops import compute_padding

    rate = {"stage": vbr["vbr_stage"], "s": 0, "inputscale": vbr["vbr_scale"]} if vbr else {}
    padding, unpad = compute_padding(x.shape[-2], x.shape[-1], min_div=2**6)
    with torch.no_grad():
        enc = model.compress(torch.nn.functional.pad(x[None], padding), **rate)
        x_hat = torch.nn.functional.pad(model.decompress(enc["strings"], enc["shape"], **rate)["x_hat"], unpad)
    return (x_hat * 255).clamp(0, 255).round()[0] / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a codec of this project (Lightning .ckpt) or a plain state dict")
    parser.add_argument("--arch", default="bmshj2018-hyperprior")
    parser.add_argument("--quality", type=int, default=3)
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 96],
                        help="N M (cheng2020: N) of a codec built from random weights (without --checkpoint); 0: the zoo's")
    parser.add_argument("--json", help="also write the per-image rows and the ratio to this JSON file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        codec, source = load_codec_checkpoint(args.arch, args.checkpoint), args.checkpoint
    else:
        torch.manual_seed(0)
        channels = list(args.channels) if any(args.channels) else None
        codec = build_codec(args.arch, args.quality, channels=channels)
        if hasattr(codec, "rate_index"):  # untrained variable-rate latents are tiny: all would round to 0
            with torch.no_grad():
                codec.g_a[-1].weight *= 100
        source = f"random weights, quality {args.quality}, channels {channels or 'zoo'}"
    codec.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_codec(codec, Path(tmp) / "codec.pth.tar")
        model, vbr = their_model(args.arch, codec, path)
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(
        f"arch={args.arch} codec={source} threads={torch.get_num_threads()} repeats={args.repeats} "
        f"torch={torch.__version__} compressai={eval_model.compressai.__version__}"
    )
    print("ours = robust_nic.coding.code + evaluation.measure.clean_metrics on the project's codec object;")
    print("theirs = compressai.utils.eval_model.inference on the exported codec.pth.tar reloaded by eval_model "
          "(or, outside its zoo dict, as CompressAI's own class).")

    images = []
    for path in sample_photos(SAMPLE_HELDOUT):
        # Each side gets its own reader's tensor: the same values, but ours (evaluate.py's read_image(path)[None])
        # is a permuted, channels-last view of the decoded array and eval_model's (ToTensor) is contiguous.
        x, x_theirs = read_image(path)[None], eval_model.read_image(path)
        if not torch.equal(x[0], x_theirs):
            raise SystemExit(f"{path.name}: eval_model reads another image than ours")
        images.append((path.name, x, x_theirs))

    header = (f"{'image':<11} {'size':>8} {'bpp ours':>10} {'bpp theirs':>10} {'PSNR ours':>11} {'PSNR theirs':>11} "
              f"{'exact':>11} {'same x_hat':>10} {'ms ours':>8} {'ms theirs':>9} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    total_ours = total_theirs = 0.0
    all_equal = True
    rows = []
    for name, x, x_theirs in images:
        ours(codec, x), theirs(model, x_theirs, **vbr)  # warm-up
        times = {"ours": [], "theirs": []}
        for _ in range(args.repeats):
            for side, fn, target, image in (("ours", ours, codec, x), ("theirs", theirs, model, x_theirs)):
                start = time.perf_counter()
                result = fn(target, image, **(vbr if side == "theirs" else {}))
                times[side].append(time.perf_counter() - start)
                if side == "ours":
                    mine = result
                else:
                    other = result
        exact = exact_psnr(x[0], mine["x_hat"])
        same = torch.equal(mine["x_hat"], their_reconstruction(model, x_theirs, **vbr))
        equal = mine["bpp"] == other["bpp"] and same and abs(mine["psnr"] - exact) < 1e-6
        all_equal &= equal
        t_ours, t_theirs = statistics.median(times["ours"]), statistics.median(times["theirs"])
        total_ours, total_theirs = total_ours + t_ours, total_theirs + t_theirs
        rows.append({"image": name, "bpp_ours": mine["bpp"], "bpp_theirs": other["bpp"], "psnr_ours": mine["psnr"],
                     "psnr_theirs": other["psnr"], "same_x_hat": same, "s_ours": t_ours, "s_theirs": t_theirs})
        print(
            f"{name:<11} {x.shape[-1]}x{x.shape[-2]:<4} {mine['bpp']:>10.6f} {other['bpp']:>10.6f} "
            f"{mine['psnr']:>11.7f} {other['psnr']:>11.7f} {exact:>11.7f} {'yes' if same else 'NO':>10} "
            f"{1000 * t_ours:>8.1f} {1000 * t_theirs:>9.1f} {t_ours / t_theirs:>6.3f}"
        )
    print("-" * len(header))
    ratio = total_ours / total_theirs
    print(
        f"equal bpp, identical 8-bit reconstructions, PSNR = exact to 1e-6: {'yes' if all_equal else 'NO'}\n"
        f"seconds per image, ours / CompressAI eval_model: {ratio:.3f} (target <= {TARGET}: "
        f"{'met' if ratio <= TARGET else 'not met'})"
    )
    if args.json:
        write_result(args.json, args, source, rows, ratio, all_equal)



def write_result(path: str, args, source: str, rows: list[dict], ratio: float, all_equal: bool) -> None:
    import datetime
    import json
    import os
    import platform

    import robust_nic

    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "versions": {"robust_nic": getattr(robust_nic, "__version__", "?"), "torch": torch.__version__,
                     "compressai": eval_model.compressai.__version__},
        "arch": args.arch, "codec": source, "threads": torch.get_num_threads(), "repeats": args.repeats,
        "images": rows, "identical_bitstream_results": all_equal, "ratio_ours_over_compressai": ratio,
    }  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
