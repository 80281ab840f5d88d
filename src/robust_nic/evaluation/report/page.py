"""The report page as a list of blocks (headings, text, tables, figures), and writing it out."""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path

from robust_nic.evaluation.metric_keys import BY_NAME
from robust_nic.evaluation.report.findings import findings
from robust_nic.evaluation.report.render import to_html, to_markdown
from robust_nic.evaluation.report.runs import Run, find_runs
from robust_nic.evaluation.report.tables import (
    ATTACKED_PSNR,
    clean_table,
    records_table,
    robustness_rows,
    robustness_table,
)

MAX_EXAMPLE_FIGURES = 4  # per-image attack figures embedded (one per run)

READING_GUIDE = [
    "**bpp**: bits per pixel of the real bitstream (entropy-coded file size / pixels); lower is smaller.",
    "**PSNR** (dB) and **MS-SSIM**: fidelity of the decoded image to the source on 8-bit values; higher is better.",
    "**eps**: the attacker's budget, the RMS of the perturbation on the [0,1] scale: eps 0.01 means "
    "MSE 1e-4, an input PSNR of 40 dB, invisible to the eye (the paper's default).",
    "**PSNR_in** = PSNR(source, adversarial input): how small the perturbation is. "
    "**PSNR_out** = PSNR(clean reconstruction, attacked reconstruction): how far the codec's output moves.",
    "**delta_psnr** = PSNR_in - PSNR_out (the paper's vulnerability index): by how many dB the codec "
    "amplifies the perturbation. Around 0 dB or below: the output moves no more than the input (robust). "
    "10 dB: the output error is 10x the input error in MSE. 20 dB or more: an invisible perturbation "
    "visibly wrecks the reconstruction.",
    "**delta_psnr smooth**: the same index through the codec's transforms alone, without rounding the "
    "latents (undefended codecs only). Its gap to delta_psnr is the damage of latents the perturbation pushes "
    "across rounding boundaries, which dominates on small codecs.",
    "**adv** rows: the attack is crafted on the bare codec. Without a defense this is the direct white-box "
    "attack; with a defense it is transferred (the attacker ignores the defense). **adaptive** rows: the attack "
    "is crafted through the defense (the attacker knows it). Only the adaptive number says how robust a "
    "defended codec really is.",
    "**Defense cost**: clean bpp and PSNR of the defended codec minus those of the same codec without the "
    "defense on the same images (from a matching evaluation run, when one is given).",
]


def build_blocks(runs: list[Run], out: Path) -> list[tuple]:
    evaluations = [r for r in runs if r.is_evaluation]
    studies = [r for r in runs if r.is_study]
    rows = [row for run in evaluations for row in robustness_rows(run, evaluations)]
    rows.sort(key=lambda r: (r["run"].codec, r["run"].defended, r["run"].defense, r["eps"]))
    blocks: list[tuple] = [
        ("h", 1, "Robustness report"),
        (
            "p",
            f"{len(evaluations)} evaluation run(s) and {len(studies)} study run(s), gathered on "
            f"{datetime.now():%Y-%m-%d %H:%M}. Codecs are learned image codecs (CompressAI); attacks add an "
            "imperceptible perturbation to the input and measure how much the decoded image changes, "
            "through the real entropy coder on 8-bit images.",
        ),  # fmt: skip
        ("h", 2, "How to read this page"),
        ("ul", READING_GUIDE),
    ]
    items = findings(evaluations + studies, rows)
    if items:
        blocks += [("h", 2, "Summary"), ("ul", items)]
    if evaluations:
        blocks += [
            ("h", 2, "Clean rate-distortion"),
            ("p", "Mean over the test images of each run, without attack (real bitstreams)."),
            ("table", *clean_table(evaluations)),
        ]
    if rows:
        blocks += [
            ("h", 2, "Robustness"),
            (
                "p",
                "One row per codec, defense, budget and attack kind; values are means over the test images. "
                f"'{ATTACKED_PSNR}' is the attacked reconstruction's PSNR vs the source, with the clean one "
                f"in brackets; '{BY_NAME['delta_bpp_pct'].label}' is the relative change of the bitstream size "
                "under attack.",
            ),  # fmt: skip
            ("table", *robustness_table(rows)),
        ]
        blocks += evaluation_figures(evaluations, out)
    for run in studies:
        blocks += study_blocks(run, out)
    blocks += [("h", 2, "Runs"), ("table", ["Run", "Kind", "Codec", "Path"], [
        [r.name, f"study: {r.manifest['study']}" if r.is_study else "evaluation" if r.is_evaluation else "other",
         r.codec, str(r.path)] for r in runs])]  # fmt: skip
    return blocks


def evaluation_figures(runs: list[Run], out: Path) -> list[tuple]:
    blocks, examples = [], 0
    for run in runs:
        curve = run.path / "delta_psnr_vs_eps.png"
        if curve.is_file():
            caption = f"delta_psnr against the budget eps, {run.codec}, defense {run.defense} ({run.name})"
            blocks.append(("img", copy_file(curve, run, out), caption))
        figures = sorted((run.path / "figures").glob("*.png"))
        if figures and examples < MAX_EXAMPLE_FIGURES:
            examples += 1
            caption = (f"Example ({run.codec}, defense {run.defense}): source, adversarial input, clean and "
                       f"attacked reconstruction; {figures[0].stem} ({run.name})")  # fmt: skip
            blocks.append(("img", copy_file(figures[0], run, out), caption))
    return blocks


def study_blocks(run: Run, out: Path) -> list[tuple]:
    manifest = run.manifest
    blocks = [
        ("h", 2, f"Study: {manifest.get('title', manifest['study'])}"),
        (
            "p",
            f"Codec `{run.codec}`, defense {run.defense}, run {run.name}. {manifest.get('explanation', '')}",
        ),
    ]
    if manifest.get("summary"):
        blocks.append(("table", *records_table(manifest["summary"], manifest.get("summary_columns"))))
    for name, caption in (manifest.get("figures") or {}).items():
        if (run.path / name).is_file():
            blocks.append(("img", copy_file(run.path / name, run, out), caption))
    links = [
        f"[{name}]({copy_file(run.path / name, run, out)}): {caption}"
        for name, caption in (manifest.get("tables") or {}).items()
        if (run.path / name).is_file()
    ]
    if links:
        blocks.append(("ul", links))
    return blocks


def copy_file(path: Path, run: Run, out: Path) -> str:
    """Copy a run's file under out/files/<run>/ and return its page-relative link."""
    relative = Path("files") / re.sub(r"[^\w.-]+", "_", run.name) / path.relative_to(run.path)
    (out / relative).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, out / relative)
    return relative.as_posix()


def write_report(runs: list[str | Path], out: str | Path) -> Path:
    """Gather run directories (or folders holding them) into out/report.md and out/report.html.

    Returns the path of report.md.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(find_runs(runs), out)
    (out / "report.html").write_text(to_html(blocks))
    path = out / "report.md"
    path.write_text(to_markdown(blocks))
    return path
