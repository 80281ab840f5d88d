"""Latents study: where adversarial inputs push the latent y = g_a(x), and what the entropy model makes of it.

1. Range: per channel of y, the min and max over spatial positions for the natural and the adversarial image
   (channels sorted by the natural maximum; the natural range is the "safe zone" of Chen & Ma 2023).
2. Distribution: histogram of the symbols each entropy model really codes (the entropy bottleneck's
   `round(y - median)`, the Gaussian conditional's `round(y - mean)`), natural vs adversarial, against the
   coder's own predicted pmf (its quantized CDF tables, averaged over the coded positions), with the real
   bitstream bpp; per codec, so a finetuned checkpoint (study.codecs) is drawn beside the original.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from pathlib import Path

import torch
from compressai.entropy_models import EntropyModel
from omegaconf import DictConfig

from robust_nic.coding import code, pad
from robust_nic.config import write_json
from robust_nic.evaluation.manifest import write_manifest
from robust_nic.evaluation.measure import adversarial_metrics
from robust_nic.evaluation.outputs import mean_of, write_rows_csv
from robust_nic.evaluation.setup import prepare, required_attack, single_eps
from robust_nic.metrics import to_8bit
from robust_nic.scoped import patched
from robust_nic.studies import STUDIES, CodecListOptions
from robust_nic.studies.latent_figures import plot_latent_range, plot_symbol_histogram

log = logging.getLogger(__name__)
# The bpp of each input, named as metric_keys names it.
BPP_COLUMN = {"natural": "clean/bpp", "adversarial": "adv/bpp"}

EXPLANATION = (
    "Range: per channel of the analysis transform's latent y = g_a(x), the max and min over positions for "
    "the natural image (shaded: the 'safe zone') and for its adversarial version, channels sorted by the "
    "natural max; `outside` is the fraction of adversarial channel extrema outside the natural range. "
    "Distribution: frequency of the symbols each entropy model codes (natural vs adversarial, bars) against "
    "the pmf the coder predicts for them (lines, averaged over the coded positions); symbols the model finds "
    "improbable cost many bits, which is why the attacked bitstream (bpp) grows. `escape` counts symbols "
    "outside the coder's table (coded in the expensive bypass mode)."
)


def latent_extrema(codec: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel min and max over positions of g_a on the 8-bit, padded image (what the coder transforms)."""
    with torch.no_grad():
        y = codec.g_a(pad(to_8bit(x))[0])[0]
    return y.amin(dim=(1, 2)).cpu(), y.amax(dim=(1, 2)).cpu()


def range_rows(image: str, natural: tuple, adversarial: tuple) -> list[dict]:
    """One row per channel, ranked by the natural maximum (rank 0: largest)."""
    (nat_min, nat_max), (adv_min, adv_max) = natural, adversarial
    rank = torch.empty_like(nat_max, dtype=torch.long)
    rank[torch.argsort(nat_max, descending=True)] = torch.arange(len(nat_max))
    return [
        {"image": image, "channel": c, "rank_by_natural_max": int(rank[c]),
         "natural_min": float(nat_min[c]), "natural_max": float(nat_max[c]),
         "adversarial_min": float(adv_min[c]), "adversarial_max": float(adv_max[c])}
        for c in range(len(nat_max))
    ]  # fmt: skip


def fraction_outside(rows: list[dict]) -> float:
    """Fraction of adversarial channel extrema (both min and max) outside [natural_min, natural_max]."""
    outside = sum(
        (r["adversarial_max"] > r["natural_max"]) + (r["adversarial_min"] < r["natural_min"]) for r in rows
    )
    return outside / (2 * len(rows))


class CodedSymbols:
    """Records, while `codec.compress` runs, each entropy model's symbols and the CDF index of each symbol.

    Both are shadowed on the instances: each quantize "symbols" follows the (_)build_indexes that gives its
    CDF indexes (also in mbt2018's per-pixel loop); the decoder side is not recorded.
    """

    def __init__(self, codec: torch.nn.Module):
        self.codec = codec
        self.models = {name: m for name, m in codec.named_modules() if isinstance(m, EntropyModel)}
        self.symbols = defaultdict(list)
        self.indexes = defaultdict(list)
        self.latest = {}
        self.active = False

    def __enter__(self) -> CodedSymbols:
        compress = self.codec.compress

        def recorded_compress(*args, **kwargs):
            self.active = True
            try:
                return compress(*args, **kwargs)
            finally:
                self.active = False

        self.patches = contextlib.ExitStack()  # earlier patches come back on exit
        self.patches.enter_context(patched(self.codec, "compress", recorded_compress))
        for name, model in self.models.items():
            self.patches.enter_context(patched(model, "quantize", self._quantize(name, model.quantize)))
            for method in ("build_indexes", "_build_indexes"):
                if hasattr(model, method):
                    recorded = self._indexes(name, getattr(model, method))
                    self.patches.enter_context(patched(model, method, recorded))
        return self

    def __exit__(self, *exc) -> None:
        self.patches.close()

    def _quantize(self, name, original):
        def quantize(inputs, mode, means=None):
            out = original(inputs, mode, means)
            if mode == "symbols" and self.active:
                self.symbols[name].append(out.detach().reshape(-1).round().long().cpu())
                self.indexes[name].append(self.latest[name])  # the indexes the coder pairs with them
            return out

        return quantize

    def _indexes(self, name, original):
        def build(*args):
            out = original(*args)
            if self.active:  # also built when decoding z inside compress: kept only if symbols follow
                self.latest[name] = out.detach().reshape(-1).long().cpu()
            return out

        return build

    def per_model(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {name: (torch.cat(self.symbols[name]), torch.cat(self.indexes[name])) for name in self.symbols}


def coder_tables(model: EntropyModel) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per CDF index: the pmf of its symbols (from the quantized CDF), its first symbol, its escape probability."""
    cdf, lengths, offsets = model._quantized_cdf.cpu(), model._cdf_length.cpu(), model._offset.cpu()
    pmfs, escape = [], []
    for i in range(cdf.shape[0]):
        probabilities = torch.diff(cdf[i, : int(lengths[i])]).double() / 2**16  # last bin: the escape symbol
        pmfs.append(probabilities[:-1])
        escape.append(probabilities[-1])
    return pmfs, offsets.long(), torch.stack(escape)


def symbol_range(model: EntropyModel, recorded: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[int, int]:
    """The smallest and largest symbol coded or given probability by a used CDF table (the histogram's grid)."""
    pmfs, offsets, _ = coder_tables(model)
    used = torch.unique(torch.cat([indexes for _, indexes in recorded])).tolist()
    symbols = torch.cat([symbols for symbols, _ in recorded])
    lo = min([int(symbols.min())] + [int(offsets[i]) for i in used])
    hi = max([int(symbols.max())] + [int(offsets[i]) + len(pmfs[i]) - 1 for i in used])
    return lo, hi


def symbol_histogram(
    model: EntropyModel, symbols: torch.Tensor, indexes: torch.Tensor, lo: int, hi: int
) -> dict:
    """Counts of symbols lo..hi, the predicted pmf averaged over the coded positions, and the escapes."""
    pmfs, offsets, escape = coder_tables(model)
    values = torch.arange(lo, hi + 1)
    predicted = torch.zeros(len(values), dtype=torch.float64)
    uses = torch.bincount(indexes, minlength=len(pmfs))
    escapes = 0
    for i in torch.nonzero(uses).flatten().tolist():
        start = int(offsets[i]) - lo
        keep = slice(max(start, 0), min(start + len(pmfs[i]), len(values)))
        predicted[keep] += uses[i] * pmfs[i][keep.start - start : keep.stop - start]
        here = symbols[indexes == i] - int(offsets[i])
        escapes += int(((here < 0) | (here >= len(pmfs[i]))).sum())
    predicted /= len(symbols)
    counts = torch.bincount((symbols.clamp(lo, hi) - lo), minlength=len(values))
    return {"values": values, "counts": counts, "predicted": predicted, "escapes": escapes,
            "predicted_escape": float((uses.double() * escape).sum() / len(symbols))}  # fmt: skip


def coded_symbols(codec: torch.nn.Module, x: torch.Tensor):
    """Really code x; returns the Coded result and, per entropy model, (symbols, CDF indexes)."""
    with CodedSymbols(codec) as recorder:
        coded = code(codec, x)
    return coded, recorder.per_model()


@STUDIES.register("latents", options=CodecListOptions)
def run_latents(cfg: DictConfig, run_dir: Path) -> dict:
    """`python evaluate.py study=latents attack=chen2023 ... [study.codecs=[FINETUNED]]`: CSVs, figures, JSONs."""
    inputs = prepare(cfg, run_dir)
    attack = required_attack(inputs.settings)
    attack = attack.with_eps(single_eps(inputs.settings))
    metrics, range_table, summary, hist_rows, figures = {}, [], [], [], {}
    for label, codec in inputs.codecs.items():
        codec.eval()
        pooled = {"natural": defaultdict(list), "adversarial": defaultdict(list)}
        bpp = {"natural": [], "adversarial": []}
        image_rows = []
        for name, x in inputs.images:
            x_adv = attack(codec, x)
            clean, natural = coded_symbols(codec, x)
            attacked, adversarial = coded_symbols(codec, x_adv)
            delta_psnr = float(adversarial_metrics(x, x_adv, clean, attacked)["delta_psnr"][0])
            rows = range_rows(name, latent_extrema(codec, x), latent_extrema(codec, x_adv))
            outside = fraction_outside(rows)
            range_table += [{"codec": label} | r for r in rows]
            stem = f"latent_range_{label}_{Path(name).stem}.png"
            plot_latent_range(rows, f"{label}, {name}: delta_psnr {delta_psnr:.2f} dB", run_dir / stem)
            figures[stem] = f"Latent range of {name} on {label}: natural (shaded) vs adversarial (lines)."
            image_rows.append({"codec": label, "image": name, "adv/delta_psnr": delta_psnr, "outside": outside,
                               "clean/bpp": float(clean.bpp[0]), "adv/bpp": float(attacked.bpp[0])})  # fmt: skip
            metrics[f"study/latents/{label}/{name}/outside"] = outside
            metrics[f"study/latents/{label}/{name}/adv/delta_psnr"] = delta_psnr
            for kind, recorded in (("natural", natural), ("adversarial", adversarial)):
                bpp[kind].append(image_rows[-1][BPP_COLUMN[kind]])
                for model, pair in recorded.items():
                    pooled[kind][model].append(pair)
        summary += image_rows
        panels = {}
        for model_name, model in ((n, m) for n, m in codec.named_modules() if isinstance(m, EntropyModel)):
            joined = {k: [torch.cat(t) for t in zip(*pooled[k][model_name], strict=True)] for k in pooled}
            lo, hi = symbol_range(model, [joined[k] for k in joined])
            panels[model_name] = {k: symbol_histogram(model, *joined[k], lo, hi) for k in joined}
            for kind, h in panels[model_name].items():
                hist_rows += [{"codec": label, "entropy_model": model_name, "input": kind, "symbol": int(v),
                               "count": int(c), "predicted_probability": float(p)}
                              for v, c, p in zip(h["values"], h["counts"], h["predicted"], strict=True)]  # fmt: skip
                hist_rows.append({"codec": label, "entropy_model": model_name, "input": kind, "symbol": "escape",
                                  "count": h["escapes"], "predicted_probability": h["predicted_escape"]})  # fmt: skip
        means = {k: sum(v) / len(v) for k, v in bpp.items()}
        stem = f"latent_symbols_{label}.png"
        plot_symbol_histogram(panels, f"{label}: bpp natural {means['natural']:.3f}, "
                              f"adversarial {means['adversarial']:.3f}", run_dir / stem)  # fmt: skip
        figures[stem] = f"Coded symbols vs the entropy model's predicted pmf on {label} (all images pooled)."
        metrics |= {f"study/latents/{label}/{BPP_COLUMN[k]}": v for k, v in means.items()}
        metrics[f"study/latents/{label}/outside"] = mean_of(image_rows, "outside")
    write_rows_csv(range_table, run_dir / "latent_range.csv")
    write_rows_csv(hist_rows, run_dir / "latent_symbols.csv")
    write_rows_csv(summary, run_dir / "latents.csv")
    metrics["study/latents/eps"] = float(attack.eps)
    metrics["study/images"] = float(len(inputs.images))
    write_json(metrics, run_dir / "metrics.json")
    title = f"Latents under {attack.name} attacks (eps={float(attack.eps):g}, {len(inputs.images)} images)"
    tables = {"latents.csv": "per codec and image: delta_psnr, fraction outside the natural range, bpp",
              "latent_range.csv": "per channel: natural and adversarial min/max of y",
              "latent_symbols.csv": "coded symbol counts and the predicted probabilities"}  # fmt: skip
    write_manifest(run_dir, "latents", title, EXPLANATION, summary, figures, tables)
    log.info("latents study results in %s", run_dir)
    return metrics
