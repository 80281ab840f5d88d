"""The evaluation job behind evaluate.py: code every test image clean and attacked, write results."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from robust_nic.attacks import build_attack
from robust_nic.codecs import CodecError, export_codec
from robust_nic.config import codec_from_settings, resolve, save_settings, write_json
from robust_nic.data import split_files, whole_image_limit
from robust_nic.defenses import build_defense
from robust_nic.evaluation.measure import (
    PSNR_CAP,
    NonFiniteError,
    adversarial_metrics,
    clean_metrics,
    code_or_nan,
    smooth_delta_psnr,
    smooth_reconstruction,
)
from robust_nic.evaluation.outputs import (
    compressai_results,
    mean_of,
    plot_delta_psnr_vs_eps,
    save_attack_images,
    write_rows_csv,
)
from robust_nic.images import ImageError, read_image
from robust_nic.metrics import ms_ssim_scales
from robust_nic.run_dir import check_writable

log = logging.getLogger(__name__)


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def eps_values(attack_cfg: dict) -> list[float]:
    """attack.eps may be one value or a list (several budgets in one run)."""
    eps = attack_cfg.get("eps")
    values = eps if isinstance(eps, (list, tuple)) else [eps]
    return [float(e) for e in values]


def load_eval_codec(settings: dict, device: torch.device):
    model = settings["model"]
    if not model.get("pretrained") and not model.get("checkpoint"):
        raise CodecError(
            f"model={model.get('name')} has no pretrained weights: evaluate a trained codec with "
            "model.checkpoint=PATH (e.g. outputs/train/RUN/checkpoints/last.ckpt), or a zoo codec with "
            "model.pretrained=true"
        )
    codec = codec_from_settings(model).to(device).eval()
    codec.update(force=True)
    return codec


def attack_sources(settings: dict, codec, defense) -> dict[str, torch.nn.Module]:
    """Which module each attack row is crafted on: the bare codec (`adv`, transferred to any defense)
    and, for a real defense, the defense itself (`adaptive`: the attacker knows the defense). The random
    noise baseline does not adapt to anything: it gets no adaptive rows (they would be copies)."""
    sources = {"adv": codec}
    defense_name = (settings.get("defense") or {}).get("name", "none")
    if defense_name != "none":
        if (settings.get("attack") or {}).get("name") == "noise":
            log.info(
                "attack=noise is a random baseline that does not adapt to defense=%s: no adaptive rows",
                defense_name,
            )
        else:
            sources["adaptive"] = defense
    return sources


@dataclass
class Evaluation:
    """What every test image goes through: the real coding through `defense`, and per budget each attack
    source's example coded the same way."""

    settings: dict
    codec: torch.nn.Module
    defense: torch.nn.Module
    attack: object | None
    budgets: list[float]
    sources: dict[str, torch.nn.Module]
    files: list[Path]
    run_dir: Path

    @property
    def split_damage(self) -> bool:
        # Undefended runs also split the damage into the transforms' share and the rounding flips'.
        return (self.settings.get("defense") or {}).get("name", "none") == "none"

    def image_rows(self, index: int, path: Path, x: torch.Tensor) -> list[dict]:
        """One row per budget (one in all without an attack); non-finite measurements are NaN."""
        clean = self.defense.code(x)
        base = {"image": path.name} | numbers("clean", clean_metrics(x, clean))
        base["ms_ssim_scales"] = ms_ssim_scales(min(x.shape[-2:]))
        if self.attack is None:
            return [base]
        target = _attack_target(self.settings, self.files, index, x)
        smooth = smooth_reconstruction(self.codec, x) if self.split_damage else None
        rows = []
        for eps in self.budgets:
            row = base | {"eps": eps}
            results = {
                kind: attack_and_measure(self.attack.with_eps(eps), source, self.defense, x, clean, target)
                for kind, source in self.sources.items()
            }
            if "adaptive" in results:
                results["adaptive"] = strongest_of(results["adaptive"], results["adv"])
            for kind, (x_adv, attacked, metrics) in results.items():
                if smooth is not None:
                    metrics["delta_psnr_smooth"] = smooth_delta_psnr(self.codec, x, x_adv, smooth)
                row |= numbers(kind, metrics)
                if self.settings.get("save_images", True) and torch.isfinite(x_adv).all():
                    stem = f"{path.stem}_eps{eps:g}_{kind}"
                    save_attack_images(stem, x, x_adv, clean.x_hat, attacked.x_hat, self.run_dir)
            rows.append(row)
        return rows


def evaluate(cfg: DictConfig, run_dir: Path) -> dict:
    """Evaluate a codec (with an optional defense and attack) on the test images; returns metrics.json.

    per_image.csv is rewritten after every image. An image that cannot be decoded is skipped with a warning
    (listed in metrics.json); a run that stops (error, Ctrl-C, non-finite results) leaves its finished rows
    and a metrics.json marked partial, with the reason."""
    settings = resolve(cfg)
    L.seed_everything(int(settings.get("seed", 0)), verbose=False)
    device = pick_device(settings.get("device"))
    files = split_files(settings["data"])["test"]  # first: a bad image list stops the run before any work
    codec = load_eval_codec(settings, device)
    save_settings(settings, run_dir)  # after loading: with the channels the checkpoint really holds
    defense = build_defense(settings.get("defense"), codec).to(device)
    # A bar over attack steps (inside the bar over images) unless the run says otherwise.
    attack = build_attack({**settings["attack"], "progress": settings.get("progress", True)})
    if attack is not None and settings.get("save_images", True):
        # Checked before the first attack: a file in the way would otherwise fail after it.
        check_writable(run_dir / "images", run_dir / "figures")
    limit = settings.get("max_images")
    files = files[:limit] if limit else files
    budgets = eps_values(settings["attack"]) if attack is not None else []
    sources = attack_sources(settings, codec, defense)
    evaluation = Evaluation(settings, codec, defense, attack, budgets, sources, files, run_dir)
    max_pixels = whole_image_limit(settings["data"])

    rows: list[dict] = []
    skipped: list[str] = []
    try:
        for index, path in enumerate(tqdm(files, desc="images", unit="img")):
            try:
                x = read_image(path, max_pixels)[None].to(device)
            except ImageError as err:
                warnings.warn(f"skipping test image {path.name}: {err}", stacklevel=2)
                skipped.append(path.name)
                continue
            rows += evaluation.image_rows(index, path, x)
            write_rows_csv(rows, run_dir / "per_image.csv")
        if not rows:
            raise ImageError(
                f"none of the {len(files)} test images could be read ({', '.join(skipped)}); see the warnings"
            )
        broken = nonfinite_images(rows)
        if broken:
            raise NonFiniteError(nonfinite_message(broken, len({r["image"] for r in rows}), run_dir))
    except BaseException as err:
        reason = str(err) if isinstance(err, NonFiniteError) else f"stopped by {type(err).__name__}: {err}"
        finished = [r for r in rows if r["image"] not in nonfinite_images(rows)]
        write_json(results_summary(finished, budgets, skipped) | {"partial": True, "partial_reason": reason},
                   run_dir / "metrics.json")  # fmt: skip
        raise

    metrics = results_summary(rows, budgets, skipped)
    warn_capped(rows)
    write_json(metrics, run_dir / "metrics.json")
    name = f"{settings['model']['name']}-q{settings['model']['quality']}"
    clean_means = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("test/clean/")}
    description = f"robust-nic evaluation of {settings['model']['arch']} ({settings['model']['metric']}), defense={settings.get('defense', {}).get('name', 'none')}"
    write_json(compressai_results(name, description, clean_means), run_dir / "results_compressai.json")
    export_codec(codec, run_dir / "codec.pth.tar")
    if len(budgets) > 1:
        curves = {
            kind: [(eps, metrics[f"test/{kind}/eps_{eps:g}/delta_psnr"]) for eps in budgets]
            for kind in sources
        }
        plot_delta_psnr_vs_eps(curves, run_dir / "delta_psnr_vs_eps.png")
    log.info("results in %s", run_dir)
    return metrics


def numbers(kind: str, metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """`kind/name` -> the first image's value; anything not finite is written as NaN, never a number."""
    values = {f"{kind}/{k}": float(v[0]) for k, v in metrics.items()}
    return {k: v if math.isfinite(v) else math.nan for k, v in values.items()}


def attack_and_measure(attack, source, coder, x, clean, target: dict | None = None):
    """Craft x_adv on `source` (codec or defense), code it with `coder`, measure the damage.

    Returns (x_adv, attacked Coded, per-image metrics incl. attack_s). A non-finite x_adv is not an image:
    it is measured as NaN, never handed to the entropy coder."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    x_adv = attack(source, x, **(target or {}))
    sync()
    seconds = time.perf_counter() - start
    attacked = code_or_nan(coder.code, x_adv)
    metrics = adversarial_metrics(x, x_adv, clean, attacked)
    metrics["attack_s"] = torch.full_like(metrics["bpp"], seconds / x.shape[0])
    return x_adv, attacked, metrics


def warn_capped(rows: list[dict]) -> None:
    """Say when a mean includes a delta_psnr bounded by the PSNR cap (bit-identical reconstructions)."""
    for key in sorted({k for r in rows for k in r if k.endswith("/output_unchanged")}):
        count = sum(1 for r in rows if r.get(key) == 1.0)
        if count:
            log.warning(
                "%d of %d rows: the attacked reconstruction is bit-identical to the clean one (%s = 1); their "
                "psnr_out is the %g dB cap and their delta_psnr only an upper bound (the codec absorbed the "
                "perturbation completely)", count, len(rows), key, PSNR_CAP,
            )


def strongest_of(adaptive: tuple, transferred: tuple) -> tuple:
    """Per image, the adaptive attack's result or the transferred example's, whichever damages the real
    bitstream through the defense more (delta_psnr). An attacker who knows the defense can always also try
    the transferred example, and the adaptive attack picks its iterates through a proxy that can miss (one
    image measured 11.3 dB adaptive vs 13.9 dB transferred). `from_transfer` (0/1) says which was kept;
    `attack_s` counts both attacks."""
    (a_x, a_coded, a_metrics), (t_x, t_coded, t_metrics) = adaptive, transferred
    take = t_metrics["delta_psnr"] > a_metrics["delta_psnr"]  # NaN compares False: a broken result stays

    def pick(t, a):
        return torch.where(take.to(a.device).view(-1, *[1] * (a.dim() - 1)), t, a)

    metrics = {k: pick(t_metrics[k], a_metrics[k]) for k in a_metrics}
    metrics["attack_s"] = a_metrics["attack_s"] + t_metrics["attack_s"]
    metrics["from_transfer"] = take.double()
    return pick(t_x, a_x), dataclasses.replace(a_coded, x_hat=pick(t_coded.x_hat, a_coded.x_hat)), metrics


def nonfinite_images(rows: list[dict]) -> dict[str, str]:
    """image -> where its measurements broke: `clean decode` (everything after depends on it), else per
    attack kind `<kind> attack` (the adversarial example itself is not finite) or `<kind> attacked decode`."""
    broken: dict[str, dict[str, None]] = {}
    for row in rows:
        by_kind: dict[str, list[str]] = {}
        for key, value in row.items():
            if "/" in key and not math.isfinite(value):
                by_kind.setdefault(key.split("/", 1)[0], []).append(key)
        if not by_kind:
            continue
        if "clean" in by_kind:
            stages = {"clean decode": by_kind["clean"]}
        else:
            eps = f" at eps {row['eps']:g}" if "eps" in row else ""
            stages = {
                f"{kind} {'attack' if f'{kind}/psnr_in' in keys else 'attacked decode'}{eps}": keys
                for kind, keys in by_kind.items()
            }
        for stage, keys in stages.items():
            shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            broken.setdefault(row["image"], {})[f"{stage} ({shown})"] = None
    return {image: "; ".join(stages) for image, stages in broken.items()}


def nonfinite_message(broken: dict[str, str], images: int, run_dir: Path) -> str:
    where = "; ".join(f"{image}: {stages}" for image, stages in broken.items())
    return (
        f"non-finite results (NaN/inf) for {len(broken)} of {images} images, not reported as numbers: {where}. "
        f"The other images' rows are in {run_dir / 'per_image.csv'} and metrics.json is marked partial. "
        "A NaN decode on a GPU can be an entropy-coder desync (re-run with device=cpu); else check the codec's weights."
    )


def results_summary(rows: list[dict], budgets: list[float], skipped: list[str]) -> dict:
    """metrics.json: the means of `rows` (summarize_rows), the fewest MS-SSIM scales any image used, and the
    test images skipped as unreadable (a count, and their names under the non-metric key `skipped`)."""
    metrics = summarize_rows(rows, budgets) if rows else {"test/images": 0.0}
    scales = [r["ms_ssim_scales"] for r in rows if "ms_ssim_scales" in r]
    if scales:
        metrics["test/ms_ssim_scales"] = float(min(scales))
    return metrics | {"test/skipped_images": float(len(skipped)), "skipped": list(skipped)}


def summarize_rows(rows: list[dict], budgets: list[float]) -> dict[str, float]:
    """Flat means: `test/clean/*`; `test/adv/*` (and `test/adaptive/*`) for one budget, or
    `test/adv/eps_<eps>/*` per budget when several are evaluated in one run. A mean over a NaN is NaN."""
    metrics: dict[str, float] = {}
    unique = {r["image"]: r for r in rows}.values()  # clean metrics once per image
    for key in [k for k in rows[0] if k.startswith("clean/")]:
        metrics[f"test/{key}"] = mean_of(list(unique), key)
    for eps in budgets:
        subset = [r for r in rows if r.get("eps") == eps]
        for key in [k for k in subset[0] if "/" in k and not k.startswith("clean/")]:
            kind, name = key.split("/", 1)
            flat = f"test/{kind}/{name}" if len(budgets) == 1 else f"test/{kind}/eps_{eps:g}/{name}"
            metrics[flat] = mean_of(subset, key)
    metrics["test/images"] = float(len(unique))
    return metrics


def _attack_target(settings: dict, files: list[Path], index: int, x: torch.Tensor) -> dict:
    """Targeted attacks aim at attack.target_image, or else the next readable test image (resized to x)."""
    attack_cfg = settings["attack"]
    if attack_cfg.get("objective") != "targeted":
        return {}
    if attack_cfg.get("target_image"):
        target = read_image(attack_cfg["target_image"])
    else:
        target = None
        for path in files[index + 1 :] + files[: index + 1]:  # ends with the image itself
            try:
                target = read_image(path)
                break
            except ImageError:
                continue  # skipped (with its warning) where it is evaluated
    target = target[None].to(x.device)
    target = torch.nn.functional.interpolate(target, size=x.shape[-2:], mode="bicubic", align_corners=False)
    return {"target": target.clamp(0, 1)}
