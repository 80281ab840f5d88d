"""metrics.json from per-image rows: means per kind and budget (keys from `metric_keys`), shared by
evaluate.py and the studies."""

from __future__ import annotations

from robust_nic.evaluation import metric_keys
from robust_nic.evaluation.outputs import mean_of


def results_summary(rows: list[dict], budgets: list[float], skipped: list[str]) -> dict:
    """metrics.json: the means of `rows` (summarize_rows), the fewest MS-SSIM scales any image used, and the
    test images skipped as unreadable (a count, and their names under the non-metric key `skipped`)."""
    metrics = summarize_rows(rows, budgets) if rows else {metric_keys.run_key("images"): 0.0}
    scales = [r["ms_ssim_scales"] for r in rows if "ms_ssim_scales" in r]
    if scales:
        metrics[metric_keys.run_key("ms_ssim_scales")] = float(min(scales))
    return metrics | {metric_keys.run_key("skipped_images"): float(len(skipped)), "skipped": list(skipped)}


def summarize_rows(rows: list[dict], budgets: list[float]) -> dict[str, float]:
    """Flat means: `test/clean/*`; `test/adv/*` (and `test/adaptive/*`) for one budget, or
    `test/adv/eps_<eps>/*` per budget when several are evaluated in one run. A mean over a NaN is NaN."""
    metrics: dict[str, float] = {}
    unique = {r["image"]: r for r in rows}.values()  # clean metrics once per image
    for key in [k for k in rows[0] if k.startswith("clean/")]:
        metrics[metric_keys.clean_key(key.split("/", 1)[1])] = mean_of(list(unique), key)
    for eps in budgets:
        subset = [r for r in rows if r.get("eps") == eps]
        for key in [k for k in subset[0] if "/" in k and not k.startswith("clean/")]:
            kind, name = key.split("/", 1)
            metrics[metric_keys.key(kind, name, metric_keys.budget_eps(eps, budgets))] = mean_of(subset, key)
    metrics[metric_keys.run_key("images")] = float(len(unique))
    return metrics
