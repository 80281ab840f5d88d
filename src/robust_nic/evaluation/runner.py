"""The evaluation job behind evaluate.py: code every test image clean and attacked, write results."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from robust_nic.attacks import build_attack
from robust_nic.codecs import CodecError, export_codec
from robust_nic.config import codec_from_settings, resolve, save_settings, write_json
from robust_nic.data import split_files
from robust_nic.defenses import build_defense
from robust_nic.evaluation.measure import (
    adversarial_metrics,
    clean_metrics,
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
from robust_nic.images import read_image

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
    and, for a real defense, the defense itself (`adaptive`: the attacker knows the defense)."""
    sources = {"adv": codec}
    if settings.get("defense", {}).get("name", "none") != "none":
        sources["adaptive"] = defense
    return sources


def evaluate(cfg: DictConfig, run_dir: Path) -> dict:
    """Evaluate a codec (with an optional defense and attack) on the test images; returns metrics.json."""
    settings = resolve(cfg)
    L.seed_everything(int(settings.get("seed", 0)), verbose=False)
    device = pick_device(settings.get("device"))
    save_settings(settings, run_dir)
    files = split_files(settings["data"])["test"]  # first: a bad image list stops the run before any work
    codec = load_eval_codec(settings, device)
    defense = build_defense(settings.get("defense"), codec).to(device)
    # A bar over attack steps (inside the bar over images) unless the run says otherwise.
    attack = build_attack({**settings["attack"], "progress": settings.get("progress", True)})
    limit = settings.get("max_images")
    files = files[:limit] if limit else files
    budgets = eps_values(settings["attack"]) if attack is not None else []
    sources = attack_sources(settings, codec, defense)
    # Undefended runs also split the damage into the transforms' share and the rounding flips'.
    split_damage = "adaptive" not in sources
    save_images = bool(settings.get("save_images", True))

    rows = []
    for index, path in enumerate(tqdm(files, desc="images", unit="img")):
        x = read_image(path, int(settings["data"].get("max_pixels") or 64e6))[None].to(device)
        clean = defense.code(x)
        base = {"image": path.name} | {f"clean/{k}": float(v[0]) for k, v in clean_metrics(x, clean).items()}
        if attack is None:
            rows.append(base)
            continue
        target = _attack_target(settings, files, index, x)
        smooth = smooth_reconstruction(codec, x) if split_damage else None
        for eps in budgets:
            row = base | {"eps": eps}
            for kind, source in sources.items():
                x_adv, attacked, metrics = attack_and_measure(attack.with_eps(eps), source, defense, x, clean, target)
                if smooth is not None:
                    metrics["delta_psnr_smooth"] = smooth_delta_psnr(codec, x, x_adv, smooth)
                row |= {f"{kind}/{k}": float(v[0]) for k, v in metrics.items()}
                if save_images:
                    stem = f"{path.stem}_eps{eps:g}_{kind}"
                    save_attack_images(stem, x, x_adv, clean.x_hat, attacked.x_hat, run_dir)
            rows.append(row)

    metrics = summarize_rows(rows, budgets)
    write_rows_csv(rows, run_dir / "per_image.csv")
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


def attack_and_measure(attack, source, coder, x, clean, target: dict | None = None):
    """Craft x_adv on `source` (codec or defense), code it with `coder`, measure the damage.

    Returns (x_adv, attacked Coded, per-image metrics incl. attack_s)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    x_adv = attack(source, x, **(target or {}))
    sync()
    seconds = time.perf_counter() - start
    attacked = coder.code(x_adv)
    metrics = adversarial_metrics(x, x_adv, clean, attacked)
    metrics["attack_s"] = torch.full_like(metrics["bpp"], seconds / x.shape[0])
    return x_adv, attacked, metrics


def summarize_rows(rows: list[dict], budgets: list[float]) -> dict[str, float]:
    """Flat means: `test/clean/*`; `test/adv/*` (and `test/adaptive/*`) for one budget, or
    `test/adv/eps_<eps>/*` per budget when several are evaluated in one run."""
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
    """Targeted attacks aim at attack.target_image, or else the next test image (resized to x)."""
    attack_cfg = settings["attack"]
    if attack_cfg.get("objective") != "targeted":
        return {}
    path = attack_cfg.get("target_image") or files[(index + 1) % len(files)]
    target = read_image(path)[None].to(x.device)
    target = torch.nn.functional.interpolate(target, size=x.shape[-2:], mode="bicubic", align_corners=False)
    return {"target": target.clamp(0, 1)}
