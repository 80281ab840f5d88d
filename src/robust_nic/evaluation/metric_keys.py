"""Metric keys of metrics.json, built and parsed in one place, and the declared list of metrics.

A key is `test/<kind>/<name>` (kind: clean, adv, adaptive), or `test/<kind>/eps_<eps>/<name>` when one
run evaluates several budgets (attack.eps=[...]). Tables, sweeps, BD-rate and findings read keys only
through here; adding a metric means adding one `Metric` to `METRICS`.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "test"
CLEAN = "clean"
ATTACK_KINDS = ("adv", "adaptive")  # transferred (or direct) and adaptive attack rows


@dataclass(frozen=True)
class Metric:
    name: str  # the per-image column and the key's last part
    label: str  # table header
    digits: int = 2
    higher_is_better: bool = True
    clean: bool = False  # measured on the clean coding (clean table, BD-rate, sweeps)
    attacked: bool = False  # measured per attack row
    headline: bool = False  # shown in sweep summaries


METRICS = (
    Metric("bpp", "bpp", 3, higher_is_better=False, clean=True, attacked=True, headline=True),
    Metric("psnr", "PSNR (dB)", clean=True, attacked=True, headline=True),
    Metric("ms_ssim", "MS-SSIM", 4, clean=True, attacked=True),
    Metric("psnr_in", "PSNR_in", attacked=True),
    Metric("psnr_out", "PSNR_out", higher_is_better=False, attacked=True),
    Metric("delta_psnr", "delta_psnr", higher_is_better=False, attacked=True, headline=True),
    Metric("delta_psnr_smooth", "delta_psnr smooth", higher_is_better=False, attacked=True),
    Metric("delta_bpp_pct", "bpp change", 1, higher_is_better=False, attacked=True),
)
BY_NAME = {m.name: m for m in METRICS}
CLEAN_METRICS = tuple(m for m in METRICS if m.clean)


def key(kind: str, name: str, eps: float | None = None) -> str:
    """`test/<kind>/<name>`, or `test/<kind>/eps_<eps>/<name>` for one of several budgets (eps given)."""
    return f"{prefix(kind, eps)}{name}"


def run_key(name: str) -> str:
    """A number about the whole run, not a kind of row: `test/images`, `test/skipped_images`..."""
    return f"{PREFIX}/{name}"


def clean_key(name: str) -> str:
    return key(CLEAN, name)


def prefix(kind: str, eps: float | None = None) -> str:
    return f"{PREFIX}/{kind}/" if eps is None else f"{PREFIX}/{kind}/eps_{eps:g}/"


def attack_budgets(attack_cfg: dict) -> list[float]:
    """The budgets of a run: attack.eps may be one value or a list, and a list means SEVERAL BUDGETS, each
    evaluated on every image (one row per image and budget; the attack is built once per budget with
    `Attack.with_eps`). A tensor eps (one per image) exists only inside training batches. None: no budget."""
    eps = attack_cfg.get("eps")
    if eps is None:
        return []
    return [float(e) for e in (eps if isinstance(eps, (list, tuple)) else [eps])]


def budget_eps(eps: float, budgets: list[float]) -> float | None:
    """The eps that goes into a key: only when a run has several budgets (one budget keeps plain keys)."""
    return eps if len(budgets) > 1 else None


def values(metrics: dict, kind: str, eps: float | None = None) -> dict[str, float]:
    """name -> value of one kind (and budget) of a metrics.json, e.g. every `test/adv/*` mean."""
    start = prefix(kind, eps)
    return {k[len(start) :]: v for k, v in metrics.items() if k.startswith(start) and "/" not in k[len(start) :]}


def headline_keys(keys) -> list[str]:
    """The keys a sweep summary shows: validation metrics, steps, and the headline clean/attack metrics."""
    wanted = [clean_key(m.name) for m in METRICS if m.headline and m.clean]
    wanted += [key("adv", m.name) for m in METRICS if m.headline and m.attacked and not m.clean]
    wanted += [key("adv", "psnr")]
    return [k for k in keys if k.startswith(("val/", "steps")) or any(k.startswith(w) for w in wanted)]
