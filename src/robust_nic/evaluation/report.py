"""`robust-nic report RUN_DIR... --out DIR`: evaluation and study runs gathered into one page.

A run directory holds config.yaml (the resolved settings) and metrics.json (evaluation) or study.json
(a study). The page is built once as a list of blocks and rendered twice: report.md and report.html.
Figures and study tables are copied under DIR/files/<run>/ so the page links stay relative.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from robust_nic.studies.labels import model_label
from robust_nic.studies.manifest import read_manifest

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
    "**adv** rows: the attack is crafted on the bare codec. Without a defense this is the direct white-box "
    "attack; with a defense it is transferred (the attacker ignores the defense). **adaptive** rows: the attack "
    "is crafted through the defense (the attacker knows it). Only the adaptive number says how robust a "
    "defended codec really is.",
    "**Defense cost**: clean bpp and PSNR of the defended codec minus those of the same codec without the "
    "defense on the same images (from a matching evaluation run, when one is given).",
]


@dataclass
class Run:
    path: Path
    name: str
    settings: dict
    metrics: dict
    manifest: dict | None

    @property
    def is_study(self) -> bool:
        return self.manifest is not None

    @property
    def is_evaluation(self) -> bool:
        return self.manifest is None and "test/clean/psnr" in self.metrics

    @property
    def model(self) -> dict:
        return self.settings.get("model") or {}

    @property
    def codec(self) -> str:
        return model_label(self.model)

    @property
    def defense(self) -> str:
        defense = dict(self.settings.get("defense") or {"name": "none"})
        name = defense.pop("name", "none")
        knobs = ", ".join(f"{k}={v}" for k, v in defense.items() if v is not None)
        return f"{name} ({knobs})" if knobs and name != "none" else name

    @property
    def defended(self) -> bool:
        return (self.settings.get("defense") or {}).get("name", "none") != "none"


# -- finding runs ---------------------------------------------------------------------------------------


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Run directories given directly or found below the given folders (sorted, each once)."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass evaluation or study run directories")
        candidates = [path / "config.yaml"] + sorted(path.rglob("config.yaml"))
        for config in candidates:
            run = config.parent
            if config.is_file() and ".hydra" not in run.parts and _has_results(run):
                found[run.resolve()] = None
    if not found:
        raise FileNotFoundError(
            f"no run directories (config.yaml with metrics.json or study.json) in {[str(p) for p in paths]}"
        )
    names = run_names(list(found))
    return [_load(path, name) for path, name in zip(found, names, strict=True)]


def _has_results(run: Path) -> bool:
    return (run / "metrics.json").is_file() or (run / "study.json").is_file()


def run_names(paths: list[Path]) -> list[str]:
    """Short unique names: each path relative to the deepest folder common to all runs."""
    if len(paths) == 1:
        return [paths[0].name]
    common = Path(os.path.commonpath(paths))
    return [str(p.relative_to(common)) or p.name for p in paths]


def _load(path: Path, name: str) -> Run:
    settings = yaml.safe_load((path / "config.yaml").read_text()) or {}
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return Run(path, name, settings, metrics, read_manifest(path))


# -- numbers --------------------------------------------------------------------------------------------


def fmt(value, digits: int = 2, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, float)):
        if math.isinf(value):
            return "inf"
        return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return str(value)


def eps_text(eps: float, norm: str) -> str:
    if norm == "linf":
        return f"{eps:g} L-inf ({eps * 255:.1f}/255)"
    return f"{eps:g} (MSE {eps * eps:.0e}, {-20 * math.log10(eps):.0f} dB)" if eps > 0 else f"{eps:g}"


def attack_text(attack: dict) -> str:
    name = attack.get("name", "none")
    if name == "noise":
        return "random noise"
    return f"{name}, {attack.get('steps')} steps, {attack.get('proxy')} proxy"


def eps_list(attack: dict) -> list[float]:
    eps = attack.get("eps")
    return [float(e) for e in (eps if isinstance(eps, list) else [eps])] if eps is not None else []


# -- tables ---------------------------------------------------------------------------------------------


def codec_key(run: Run) -> tuple:
    model = run.model
    source = (
        str(Path(model["checkpoint"]).resolve()) if model.get("checkpoint") else bool(model.get("pretrained"))
    )
    return (model.get("arch"), model.get("quality"), model.get("metric"), source)


def data_key(run: Run) -> tuple:
    data = run.settings.get("data") or {}
    photos = tuple(data.get("heldout_photos") or ())
    return (data.get("name"), data.get("root"), data.get("test_root"), photos, run.settings.get("max_images"))


def baseline(run: Run, runs: list[Run]) -> Run | None:
    """The undefended evaluation of the same codec on the same images."""
    for other in runs:
        if other.is_evaluation and not other.defended:
            if codec_key(other) == codec_key(run) and data_key(other) == data_key(run):
                return other
    return None


def clean_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    columns = ["Codec", "Arch", "Quality", "Defense", "Images", "bpp", "PSNR (dB)", "MS-SSIM", "Run"]
    rows = []
    for run in sorted(runs, key=lambda r: (r.codec, r.model.get("quality") or 0, r.defended, r.name)):
        m = run.metrics
        rows.append([
            run.codec, run.model.get("arch"), str(run.model.get("quality")), run.defense,
            fmt(m.get("test/images"), 0), fmt(m.get("test/clean/bpp"), 3), fmt(m.get("test/clean/psnr")),
            fmt(m.get("test/clean/ms_ssim"), 4), run.name,
        ])  # fmt: skip
    return columns, rows


def robustness_rows(run: Run, runs: list[Run]) -> list[dict]:
    """One dict per eps and attack kind (adv, adaptive) of an attacked evaluation run."""
    attack = run.settings.get("attack") or {}
    budgets = eps_list(attack)
    if attack.get("name", "none") == "none" or not budgets:
        return []
    base = baseline(run, runs) if run.defended else None
    m = run.metrics
    cost = {}
    if base is not None:
        cost = {
            "cost_bpp": m["test/clean/bpp"] - base.metrics["test/clean/bpp"],
            "cost_psnr": m["test/clean/psnr"] - base.metrics["test/clean/psnr"],
        }
    rows = []
    for eps in budgets:
        for kind in ("adv", "adaptive"):
            prefix = f"test/{kind}/" if len(budgets) == 1 else f"test/{kind}/eps_{eps:g}/"
            if f"{prefix}delta_psnr" not in m:
                continue
            values = {
                k[len(prefix) :]: v
                for k, v in m.items()
                if k.startswith(prefix) and "/" not in k[len(prefix) :]
            }
            rows.append({"run": run, "eps": eps, "kind": kind, "attack": attack} | values | cost)
    return rows


def robustness_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    columns = ["Codec", "Quality", "Defense", "Attack", "eps", "Row", "PSNR_in", "PSNR_out", "delta_psnr",
               "PSNR attacked (clean)", "bpp change", "Defense cost: bpp", "Defense cost: PSNR", "Run"]  # fmt: skip
    table = []
    for row in rows:
        run = row["run"]
        defended = run.defended
        kind = {"adv": "adv (transferred)" if defended else "adv (direct)", "adaptive": "adaptive"}[
            row["kind"]
        ]
        no_cost = "n/a (no undefended run)" if defended else "-"
        table.append([
            run.codec, str(run.model.get("quality")), run.defense, attack_text(row["attack"]),
            eps_text(row["eps"], row["attack"].get("norm", "rms")), kind, fmt(row.get("psnr_in")),
            fmt(row.get("psnr_out")), fmt(row.get("delta_psnr")),
            f"{fmt(row.get('psnr'))} ({fmt(run.metrics.get('test/clean/psnr'))})",
            f"{fmt(row.get('delta_bpp_pct'), 1, sign=True)} %",
            fmt(row["cost_bpp"], 3, sign=True) if "cost_bpp" in row else no_cost,
            f"{fmt(row['cost_psnr'], 2, sign=True)} dB" if "cost_psnr" in row else no_cost, run.name,
        ])  # fmt: skip
    return columns, table


def records_table(records: list[dict], order: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """A study's summary rows (dicts) as a table: the `order` columns, then any others, first seen first."""
    columns: list[str] = list(order or [])
    for record in records:
        columns += [k for k in record if k not in columns]
    digits = lambda key: 3 if "bpp" in key or "ms_ssim" in key else 2  # noqa: E731
    rows = [[_cell(record.get(c), digits(c)) for c in columns] for record in records]
    return columns, rows


def _cell(value, digits: int) -> str:
    if isinstance(value, float) and value != 0 and abs(value) < 1e-2:
        return f"{value:.1e}"
    return fmt(value, digits)


# -- findings -------------------------------------------------------------------------------------------


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
                f"is {fmt(run.metrics.get('test/clean/psnr'), 1)} dB clean, {fmt(row.get('psnr'), 1)} dB attacked."
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


# -- the page -------------------------------------------------------------------------------------------


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
                "'PSNR attacked (clean)' is the attacked reconstruction's PSNR vs the source, with the clean one "
                "in brackets; 'bpp change' is the relative change of the bitstream size under attack.",
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


# -- rendering ------------------------------------------------------------------------------------------


def to_markdown(blocks: list[tuple]) -> str:
    parts = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            parts.append(block[1])
        elif kind == "ul":
            parts.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            columns, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            parts.append("\n".join(lines))
        elif kind == "img":
            parts.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*")
    return "\n\n".join(parts) + "\n"


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    """Escaped text with the few Markdown marks the page uses: `code`, **bold**, [link](href)."""
    text = html.escape(str(text), quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)


STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
    "table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 7px}"
    "th{background:#f0f0f0}tr:nth-child(even){background:#fafafa}img{max-width:100%}"
    "figcaption{font-style:italic;color:#444}code{background:#f3f3f3;padding:0 3px}"
)


def to_html(blocks: list[tuple], title: str = "Robustness report") -> str:
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body>"]  # fmt: skip
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(c)}</th>" for c in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2]
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            src, caption = html.escape(block[1]), _inline(block[2])
            parts.append(f"<figure><img src='{src}' alt=''><figcaption>{caption}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


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
