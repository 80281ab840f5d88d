"""Plain-sentence findings: what each codec's and study's numbers mean."""

from __future__ import annotations

from robust_nic.evaluation.metric_keys import (
    ADAPTIVE,
    ADV,
    DELTA_PSNR,
    NOISE,
    PSNR,
    PSNR_IN,
    PSNR_OUT,
    TRANSFER_DIAGONAL,
    TRANSFER_OFF_DIAGONAL,
    clean_key,
    column,
    generation_column,
    generation_of,
    transfer_pairs,
)
from robust_nic.evaluation.report.runs import Run, baseline
from robust_nic.evaluation.report.tables import attack_text, eps_text, fmt


def findings(runs: list[Run], rows: list[dict]) -> list[str]:
    """Plain sentences: what each codec's numbers mean."""
    items = []
    for row in rows:
        run = row["run"]
        eps = eps_text(row["eps"], row["attack"].get("norm", "rms"))
        if not run.defended:
            items.append(
                f"`{run.codec}` under {attack_text(row['attack'])} at eps {eps}: delta_psnr "
                f"{fmt(row.get(DELTA_PSNR), 1)} dB, i.e. a perturbation of PSNR_in {fmt(row.get(PSNR_IN), 1)} dB "
                f"moves the reconstruction by PSNR_out {fmt(row.get(PSNR_OUT), 1)} dB; its PSNR vs the source "
                f"is {fmt(run.metrics.get(clean_key(PSNR)), 1)} dB clean, {fmt(row.get(PSNR), 1)} dB attacked."
            )
        elif row["kind"] == ADAPTIVE:
            adv = next(
                (r for r in rows if r["run"] is run and r["eps"] == row["eps"] and r["kind"] == ADV), {}
            )
            base = baseline(run, runs)
            base_rows = [r for r in rows if base is not None and r["run"] is base and r["eps"] == row["eps"]]
            before = f" (no defense: {fmt(base_rows[0].get(DELTA_PSNR), 1)} dB)" if base_rows else ""
            cost = (
                f"; clean cost {fmt(row['cost_bpp'], 3, sign=True)} bpp, {fmt(row['cost_psnr'], 2, sign=True)} dB"
                if "cost_bpp" in row
                else ""
            )
            items.append(
                f"`{run.codec}` with defense {run.defense} at eps {eps}: delta_psnr {fmt(adv.get(DELTA_PSNR), 1)} dB "
                f"transferred, {fmt(row.get(DELTA_PSNR), 1)} dB adaptive{before}{cost}."
            )
    for run in runs:
        if run.is_study:
            items += study_findings(run)
    return items


def study_findings(run: Run) -> list[str]:
    study, summary = run.manifest["study"], run.manifest.get("summary") or []
    if study == "recompression":
        items = []
        for row in summary:
            last = max((generation_of(k, PSNR) or 1 for k in row), default=1)
            items.append(
                f"Recompression of `{row['codec']}`: PSNR vs the original "
                f"{fmt(row.get(generation_column(PSNR, 1)), 1)} dB after one pass, "
                f"{fmt(row.get(generation_column(PSNR, last)), 1)} dB after {last} ({run.name})."
            )
        return items
    if study == "transfer":
        items = []
        diagonal = run.metrics.get(TRANSFER_DIAGONAL)
        if diagonal is not None:
            off = run.metrics.get(TRANSFER_OFF_DIAGONAL)
            items.append(
                f"Cross-image transfer ({run.name}): delta_psnr {fmt(diagonal, 1)} dB on the image the perturbation "
                f"was crafted for, {fmt(off, 1)} dB on other images."
            )
        pairs = transfer_pairs(run.metrics)
        for (crafted_on, coded_by), value in pairs.items():
            if crafted_on != coded_by:
                own = fmt(pairs.get((coded_by, coded_by)), 1)
                items.append(
                    f"Cross-codec transfer ({run.name}): crafted on `{crafted_on}`, coded by `{coded_by}`: delta_psnr "
                    f"{fmt(value, 1)} dB (crafted on `{coded_by}` itself: {own} dB)."
                )
        return items
    if study == "noise":
        parts = [
            f"MSE {row['mse']:.0e}: noise {fmt(row.get(column(NOISE, DELTA_PSNR)), 1)} dB, "
            f"attack {fmt(row.get(column(ADV, DELTA_PSNR)), 1)} dB"
            for row in summary
        ]
        return (
            [f"Random noise vs attack, delta_psnr ({run.name}): " + "; ".join(parts) + "."] if parts else []
        )
    return []
