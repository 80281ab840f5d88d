"""Plain-sentence findings: what each codec's and study's numbers mean."""

from __future__ import annotations

from robust_nic.evaluation.metric_keys import clean_key
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
                f"{fmt(row.get('delta_psnr'), 1)} dB, i.e. a perturbation of PSNR_in {fmt(row.get('psnr_in'), 1)} dB "
                f"moves the reconstruction by PSNR_out {fmt(row.get('psnr_out'), 1)} dB; its PSNR vs the source "
                f"is {fmt(run.metrics.get(clean_key('psnr')), 1)} dB clean, {fmt(row.get('psnr'), 1)} dB attacked."
            )
        elif row["kind"] == "adaptive":
            adv = next(
                (r for r in rows if r["run"] is run and r["eps"] == row["eps"] and r["kind"] == "adv"), {}
            )
            base = baseline(run, runs)
            base_rows = [r for r in rows if base is not None and r["run"] is base and r["eps"] == row["eps"]]
            before = f" (no defense: {fmt(base_rows[0].get('delta_psnr'), 1)} dB)" if base_rows else ""
            cost = (
                f"; clean cost {fmt(row['cost_bpp'], 3, sign=True)} bpp, {fmt(row['cost_psnr'], 2, sign=True)} dB"
                if "cost_bpp" in row
                else ""
            )
            items.append(
                f"`{run.codec}` with defense {run.defense} at eps {eps}: delta_psnr {fmt(adv.get('delta_psnr'), 1)} dB "
                f"transferred, {fmt(row.get('delta_psnr'), 1)} dB adaptive{before}{cost}."
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
            last = next((k for k in row if k.startswith("psnr_gen") and k != "psnr_gen1"), "psnr_gen1")
            items.append(
                f"Recompression of `{row['codec']}`: PSNR vs the original {fmt(row.get('psnr_gen1'), 1)} dB after one "
                f"pass, {fmt(row.get(last), 1)} dB after {last.removeprefix('psnr_gen')} ({run.name})."
            )
        return items
    if study == "transfer":
        items = []
        diagonal = run.metrics.get("study/transfer/images/diagonal")
        if diagonal is not None:
            off = run.metrics.get("study/transfer/images/off_diagonal")
            items.append(
                f"Cross-image transfer ({run.name}): delta_psnr {fmt(diagonal, 1)} dB on the image the perturbation "
                f"was crafted for, {fmt(off, 1)} dB on other images."
            )
        pairs = {
            tuple(k.split("/", 3)[3].rsplit("/", 1)[0].split("->")): v
            for k, v in run.metrics.items()
            if k.startswith("study/transfer/codecs/")
        }
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
            f"MSE {row['mse']:.0e}: noise {fmt(row.get('noise/delta_psnr'), 1)} dB, attack {fmt(row.get('adv/delta_psnr'), 1)} dB"
            for row in summary
        ]
        return (
            [f"Random noise vs attack, delta_psnr ({run.name}): " + "; ".join(parts) + "."] if parts else []
        )
    return []
