"""`robust-nic bdrate --anchor RUN... --test RUN...`: the clean rate-distortion cost of a defense.

Each side is a set of evaluation runs of one codec family at several qualities (one RD point per run:
the real bitstream's bpp and PSNR / MS-SSIM on the same images). The Bjontegaard delta rate says how
many percent more bits the test codecs need for the same quality (positive = robustness costs rate);
the BD-PSNR says how many dB they lose at the same rate. Computed by the `bjontegaard` package (PCHIP,
the interpolation of the JCT-VC/JVET common-test-conditions spreadsheets).
"""

from __future__ import annotations

import math
import warnings

import bjontegaard

from robust_nic.evaluation.metric_keys import clean_key
from robust_nic.evaluation.report.runs import Run, data_key, find_runs
from robust_nic.metrics import ms_ssim_db

QUALITIES = {
    "psnr": (clean_key("psnr"), float),
    "ms_ssim": (clean_key("ms_ssim"), lambda v: float(ms_ssim_db(v))),
}


class BDRateError(ValueError):
    """The runs cannot form two comparable rate-distortion curves."""


def rd_points(runs: list[Run], quality: str) -> tuple[list[float], list[float]]:
    """(bpp, quality) of each run's clean evaluation, sorted by bpp."""
    key, convert = QUALITIES[quality]
    points = sorted((float(r.metrics[clean_key("bpp")]), convert(r.metrics.get(key, math.nan))) for r in runs)
    if any(math.isnan(q) for _, q in points):
        raise BDRateError(f"{quality} was not measured in every run (MS-SSIM needs images of 161 px or more)")
    return [p[0] for p in points], [p[1] for p in points]


def evaluation_runs(paths: list[str], side: str) -> list[Run]:
    runs = [r for r in find_runs(paths) if r.is_evaluation]
    if len(runs) < 2:
        raise BDRateError(
            f"--{side} needs evaluation runs of at least 2 qualities (one rate-distortion point each), "
            f"found {len(runs)} in {paths}; evaluate the codec at more qualities (python evaluate.py -m model.quality=...)"
        )
    for run in runs:
        outer = [other for other in runs if other is not run and other.path.resolve() in run.path.resolve().parents]
        if outer:
            # A folder counts every run inside it: another recipe's run kept inside this one's folder would
            # silently bend the curve (a nested run is one more point).
            raise BDRateError(
                f"--{side}: run {run.path} lies inside run {outer[0].path}; a folder given to bdrate counts every "
                "run inside it, nested ones too, so move the inner run out of that folder"
            )
    bpps = [r.metrics[clean_key("bpp")] for r in runs]
    if len(set(bpps)) < len(bpps):
        raise BDRateError(f"--{side} has runs with the same bpp (the same codec twice?): {sorted(bpps)}")
    return runs


def run_points(runs: list[Run]) -> list[dict]:
    """Each run's clean (bpp, PSNR) with its path, lowest rate first: what the curve is made of."""
    points = [{"path": str(r.path), "bpp": float(r.metrics[clean_key("bpp")]),
               "psnr": float(r.metrics.get(clean_key("psnr"), math.nan))} for r in runs]  # fmt: skip
    return sorted(points, key=lambda p: p["bpp"])


def bd_rate(anchor_paths: list[str], test_paths: list[str]) -> dict:
    """BD-rate (%) and BD-quality (dB) of the test runs against the anchor runs, per quality metric."""
    anchor, test = evaluation_runs(anchor_paths, "anchor"), evaluation_runs(test_paths, "test")
    images = {data_key(r) for r in anchor + test}
    if len(images) > 1:
        raise BDRateError(f"the runs were evaluated on different images ({sorted(map(str, images))}); "
                          "compare runs of the same data and max_images")  # fmt: skip
    result = {
        "anchor": [str(r.path) for r in anchor],
        "test": [str(r.path) for r in test],
        "points": {"anchor": run_points(anchor), "test": run_points(test)},
    }
    for quality in QUALITIES:
        try:
            result[quality] = bd_between(anchor, test, quality)
        except BDRateError as err:
            if quality == "psnr":
                raise
            result[quality] = {"error": str(err)}
    return result


def bd_between(anchor: list[Run], test: list[Run], quality: str) -> dict:
    rate_a, dist_a = rd_points(anchor, quality)
    rate_t, dist_t = rd_points(test, quality)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Curves do not overlap": reported below as an error
        rate = bjontegaard.bd_rate(
            rate_a, dist_a, rate_t, dist_t, method="pchip", require_matching_points=False
        )
        dist = bjontegaard.bd_psnr(
            rate_a, dist_a, rate_t, dist_t, method="pchip", require_matching_points=False
        )
    if math.isnan(rate) or math.isnan(dist):
        raise BDRateError(
            f"no BD-rate for {quality}: the curves do not overlap (anchor bpp {rate_a}, {quality} {dist_a}; "
            f"test bpp {rate_t}, {quality} {dist_t}); evaluate both at qualities that span the same range"
        )
    return {
        "bd_rate_pct": float(rate),
        "bd_quality_db": float(dist),
        "anchor_points": [list(p) for p in zip(rate_a, dist_a, strict=True)],
        "test_points": [list(p) for p in zip(rate_t, dist_t, strict=True)],
    }
