"""Names of measured quantities in every file (metrics.json keys, CSV columns, table headers, figure labels),
built and parsed in one place, and the declared list of metrics.

Naming scheme (one name per quantity):

- A quantity's name is snake_case (`ms_ssim`, never `ms-ssim`). `ms-ssim` survives only as a VALUE of the
  settings `model.metric` / `loss.metric`, spelled as CompressAI spells its metric argument, and in
  `results_compressai.json`, whose layout (`psnr-rgb`, `ms-ssim-rgb`) is CompressAI's.
- The kind of coding is a prefix path segment: `clean`, `adv` (the attack, transferred through a defense if
  there is one), `adaptive` (the attack that knows the defense), `noise` (random noise of the same budget).
  metrics.json keys are `test/<kind>/<name>` (`test/<kind>/eps_<eps>/<name>` when one run evaluates several
  budgets); per_image.csv and study tables use the same `<kind>/<name>` (`clean/psnr`, `adv/psnr`). A table
  whose rows are each one attack (ablation.csv: the `attack` column names it) writes that attack's quantities
  bare (`psnr`) beside `clean/<name>`.
- A difference is `delta_<quantity>`, with a unit suffix only when its unit differs from the quantity's:
  `delta_psnr` (dB), `delta_bpp_pct` (percent), `delta_ms_ssim_db` (MS-SSIM in dB). Never `<quantity>_delta`
  or `<quantity>_attacked`.
- Human labels (table headers, figure axes) come from the `Metric` entry (`label`, `axis`), never retyped.

Tables, sweeps, BD-rate and findings read keys only through here; adding a metric means adding one `Metric`
to `METRICS` (or `RECORDED`, for numbers written but not shown in tables). Names of earlier versions are read
through `RENAMED` in one place (`upgrade_names`).
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "test"
CLEAN = "clean"
ADV, ADAPTIVE = "adv", "adaptive"
ATTACK_KINDS = (ADV, ADAPTIVE)  # transferred (or direct) and adaptive attack rows
STUDY = "study"  # study/<study>/...: a study's own numbers
# Names code refers to (the strings are in METRICS once more, each next to its definition below).
BPP, PSNR, MS_SSIM, PSNR_IN, PSNR_OUT = "bpp", "psnr", "ms_ssim", "psnr_in", "psnr_out"
DELTA_PSNR = "delta_psnr"


@dataclass(frozen=True)
class Metric:
    name: str  # the per-image column and the key's last part
    label: str  # table header
    digits: int = 2
    higher_is_better: bool = True
    clean: bool = False  # measured on the clean coding (clean table, BD-rate, sweeps)
    attacked: bool = False  # measured per attack row
    headline: bool = False  # shown in sweep summaries
    axis: str = ""  # figure axis title (default: the label)

    @property
    def axis_label(self) -> str:
        return self.axis or self.label


METRICS = (
    Metric(BPP, "bpp", 3, higher_is_better=False, clean=True, attacked=True, headline=True),
    Metric(
        PSNR,
        "PSNR (dB)",
        axis="PSNR of the reconstruction vs the source (dB)",
        clean=True,
        attacked=True,
        headline=True,
    ),
    Metric(MS_SSIM, "MS-SSIM", 4, clean=True, attacked=True),
    Metric(PSNR_IN, "PSNR_in", attacked=True),
    Metric(PSNR_OUT, "PSNR_out", higher_is_better=False, attacked=True),
    Metric(
        DELTA_PSNR,
        "delta_psnr",
        axis="delta PSNR (dB) = PSNR_in - PSNR_out",
        higher_is_better=False,
        attacked=True,
        headline=True,
    ),
    Metric("delta_psnr_smooth", "delta_psnr smooth", higher_is_better=False, attacked=True),
    Metric("delta_bpp_pct", "bpp change (%)", 1, higher_is_better=False, attacked=True),
    Metric("delta_ms_ssim_db", "MS-SSIM loss (dB)", higher_is_better=False, attacked=True),
)
# Written per image and averaged into metrics.json, but not shown in tables.
RECORDED = (
    Metric("bpp_est", "bpp estimated", 3, higher_is_better=False, clean=True, attacked=True),
    Metric("encode_s", "encode time (s)", 3, higher_is_better=False, clean=True),
    Metric("decode_s", "decode time (s)", 3, higher_is_better=False, clean=True),
    Metric("attack_s", "attack time (s)", 3, higher_is_better=False, attacked=True),
    Metric("output_unchanged", "attacked reconstruction unchanged", 0, attacked=True),
    Metric("from_transfer", "adaptive row kept the transferred example", 0, attacked=True),
)
WON_BY = "won_by_"  # won_by_<member>: 1 where that member of an attack suite was the strongest for the image
BY_NAME = {m.name: m for m in (*METRICS, *RECORDED)}
CLEAN_METRICS = tuple(m for m in METRICS if m.clean)
NOISE = "noise"  # the noise study's random-noise rows
KINDS = (CLEAN, *ATTACK_KINDS, NOISE)
# per_image.csv (and the noise study's noise_per_image.csv, with its budget as `mse`) columns that are not
# a kind's quantity
ROW_FIELDS = ("image", "eps", "mse", "ms_ssim_scales")
RUN_NUMBERS = ("images", "skipped_images", "ms_ssim_scales")  # test/<name>
RUN_FIELDS = ("skipped", "partial", "partial_reason", "training_images")  # metrics.json entries, not numbers
# Earlier names of the same quantities (same numbers): read from old run directories, never written.
RENAMED = {"ms_ssim_db_delta": "delta_ms_ssim_db"}


def key(kind: str, name: str, eps: float | None = None) -> str:
    """`test/<kind>/<name>`, or `test/<kind>/eps_<eps>/<name>` for one of several budgets (eps given)."""
    return f"{prefix(kind, eps)}{name}"


def run_key(name: str) -> str:
    """A number about the whole run, not a kind of row: `test/images`, `test/skipped_images`..."""
    return f"{PREFIX}/{name}"


def column(kind: str, name: str) -> str:
    """`<kind>/<name>`: the per_image.csv and study-table column of a kind's quantity (`adv/psnr`)."""
    return f"{kind}/{name}"


def study_key(study: str, *parts: str) -> str:
    """`study/<study>/<part>/...`: a number of a study's metrics.json (`study/transfer/images/diagonal`)."""
    return "/".join((STUDY, study, *parts))


# The transfer study's delta_psnr: on the image a perturbation was crafted for, and on the other images.
TRANSFER_DIAGONAL = study_key("transfer", "images", "diagonal")
TRANSFER_OFF_DIAGONAL = study_key("transfer", "images", "off_diagonal")


def transfer_pair_key(crafted_on: str, coded_by: str) -> str:
    """The transfer study's delta_psnr of examples crafted on one codec and coded by another."""
    return study_key("transfer", "codecs", f"{crafted_on}->{coded_by}", DELTA_PSNR)


def transfer_pairs(metrics: dict) -> dict[tuple[str, str], float]:
    """(crafted_on, coded_by) -> delta_psnr of every transfer_pair_key in `metrics`."""
    start, end = study_key("transfer", "codecs", ""), f"/{DELTA_PSNR}"
    return {
        tuple(k[len(start) : -len(end)].split("->", 1)): v
        for k, v in metrics.items()
        if k.startswith(start) and k.endswith(end)
    }


def generation_column(name: str, generation: int) -> str:
    """`<name>_gen<n>`: a quantity after n encode-decode generations (the recompression study)."""
    return f"{name}_gen{generation}"


def generation_of(column_name: str, name: str) -> int | None:
    """n of a generation_column of `name`, None for any other column."""
    start = f"{name}_gen"
    rest = column_name[len(start) :]
    return int(rest) if column_name.startswith(start) and rest.isdigit() else None


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
    return {
        k[len(start) :]: v for k, v in metrics.items() if k.startswith(start) and "/" not in k[len(start) :]
    }


def headline_keys(keys) -> list[str]:
    """The keys a sweep summary shows: validation metrics, steps, and the headline clean/attack metrics."""
    wanted = [clean_key(m.name) for m in METRICS if m.headline and m.clean]
    wanted += [key("adv", m.name) for m in METRICS if m.headline and m.attacked and not m.clean]
    wanted += [key("adv", "psnr")]
    return [k for k in keys if k.startswith(("val/", "steps")) or any(k.startswith(w) for w in wanted)]


def upgrade_names(record: dict) -> dict:
    """`record` (a per_image.csv row or a metrics.json) with every earlier name of a quantity (RENAMED) as
    today's name, in whatever key or column it appears; values untouched."""
    return {_renamed(k): v for k, v in record.items()}


def _renamed(name: str) -> str:
    *path, last = name.split("/")
    return "/".join([*path, RENAMED.get(last, last)])


def declared_quantity(name: str) -> bool:
    return name in BY_NAME or (name.startswith(WON_BY) and len(name) > len(WON_BY))


def declared_column(name: str) -> bool:
    """Whether `name` is a per_image.csv column of this scheme: a row field or `<kind>/<declared quantity>`."""
    if name in ROW_FIELDS:
        return True
    kind, _, quantity = name.partition("/")
    return kind in KINDS and declared_quantity(quantity) and (kind != CLEAN or BY_NAME[quantity].clean)


def declared_key(name: str) -> bool:
    """Whether `name` is a metrics.json key of this scheme (see the module docstring)."""
    if name in RUN_FIELDS:
        return True
    parts = name.split("/")
    if parts[0] != PREFIX or len(parts) < 2:
        return False
    if len(parts) == 2:
        return parts[1] in RUN_NUMBERS
    if len(parts) == 4 and not (parts[2].startswith("eps_") and _is_number(parts[2][4:])):
        return False
    return declared_column(f"{parts[1]}/{parts[-1]}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
