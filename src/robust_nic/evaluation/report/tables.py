"""Numbers as text and the report's tables (clean rate-distortion, robustness, study summaries)."""

from __future__ import annotations

import math

from robust_nic.evaluation import metric_keys
from robust_nic.evaluation.metric_keys import (
    ATTACK_KINDS,
    BPP,
    BY_NAME,
    CLEAN_METRICS,
    DELTA_PSNR,
    PSNR,
    attack_budgets,
    budget_eps,
    clean_key,
    run_key,
)
from robust_nic.evaluation.report.runs import Run, baseline
from robust_nic.rows import column_union


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
    if attack.get("members"):
        return f"{name} (per image the strongest of {', '.join(attack['members'])}), {attack.get('steps') or 'default'} steps"
    return f"{name}, {attack.get('steps')} steps, {attack.get('proxy')} proxy"


def clean_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    columns = ["Codec", "Arch", "Quality", "Defense", "Images", *(m.label for m in CLEAN_METRICS), "Run"]
    rows = []
    for run in sorted(runs, key=lambda r: (r.codec, r.model.get("quality") or 0, r.defended, r.name)):
        m = run.metrics
        rows.append([
            run.codec, run.model.get("arch"), str(run.model.get("quality")), run.defense,
            fmt(m.get(run_key("images")), 0), *(fmt(m.get(clean_key(c.name)), c.digits) for c in CLEAN_METRICS),
            run.name,
        ])  # fmt: skip
    return columns, rows


def robustness_rows(run: Run, runs: list[Run]) -> list[dict]:
    """One dict per eps and attack kind (adv, adaptive) of an attacked evaluation run."""
    attack = run.settings.get("attack") or {}
    budgets = attack_budgets(attack)
    if attack.get("name", "none") == "none" or not budgets:
        return []
    base = baseline(run, runs) if run.defended else None
    m = run.metrics
    cost = {}
    if base is not None:
        cost = {f"cost_{name}": m[clean_key(name)] - base.metrics[clean_key(name)] for name in (BPP, PSNR)}
    rows = []
    for eps in budgets:
        for kind in ATTACK_KINDS:
            values = metric_keys.values(m, kind, budget_eps(eps, budgets))
            if DELTA_PSNR not in values:
                continue
            rows.append({"run": run, "eps": eps, "kind": kind, "attack": attack} | values | cost)
    return rows


ATTACKED_PSNR = f"{BY_NAME[PSNR].label}: attacked (clean)"
ROBUSTNESS_METRICS = ("psnr_in", "psnr_out", "delta_psnr", "delta_psnr_smooth", "psnr", "delta_bpp_pct")


def robustness_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    label = {name: BY_NAME[name].label for name in ROBUSTNESS_METRICS}
    columns = ["Codec", "Quality", "Defense", "Attack", "eps", "Row", label["psnr_in"], label["psnr_out"],
               label["delta_psnr"], label["delta_psnr_smooth"], ATTACKED_PSNR,
               label["delta_bpp_pct"], "Defense cost: bpp", "Defense cost: PSNR", "Run"]  # fmt: skip
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
            fmt(row.get("psnr_out")), fmt(row.get("delta_psnr")), fmt(row.get("delta_psnr_smooth")),
            f"{fmt(row.get(PSNR))} ({fmt(run.metrics.get(clean_key(PSNR)))})",
            fmt(row.get("delta_bpp_pct"), 1, sign=True),
            fmt(row["cost_bpp"], 3, sign=True) if "cost_bpp" in row else no_cost,
            f"{fmt(row['cost_psnr'], 2, sign=True)} dB" if "cost_psnr" in row else no_cost, run.name,
        ])  # fmt: skip
    return columns, table


def records_table(records: list[dict], order: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """A study's summary rows (dicts) as a table: the `order` columns, then any others, first seen first."""
    columns = column_union(records, first=order or [])
    digits = lambda key: 3 if "bpp" in key or "ms_ssim" in key else 2  # noqa: E731
    rows = [[_cell(record.get(c), digits(c)) for c in columns] for record in records]
    return columns, rows


def _cell(value, digits: int) -> str:
    if isinstance(value, float) and value != 0 and abs(value) < 1e-2:
        return f"{value:.1e}"
    return fmt(value, digits)
