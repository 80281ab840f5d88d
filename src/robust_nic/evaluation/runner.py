"""The evaluation job behind evaluate.py: code every test image clean and attacked, write results."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from robust_nic.attacks import build_attack
from robust_nic.codecs import export_codec
from robust_nic.config import run_settings, write_json
from robust_nic.data import whole_image_reader
from robust_nic.defenses import build_defense
from robust_nic.evaluation import metric_keys
from robust_nic.evaluation.attacked import attack_and_measure, attack_sources, defense_name, strongest_of
from robust_nic.evaluation.measure import PSNR_CAP, NonFiniteError, clean_metrics, smooth_delta_psnr
from robust_nic.evaluation.metric_keys import attack_budgets
from robust_nic.evaluation.outputs import (
    compressai_results,
    plot_delta_psnr_vs_eps,
    save_attack_images,
    write_rows_csv,
)
from robust_nic.evaluation.resume import ROWS, finished_rows, seed_image, seeded_for
from robust_nic.evaluation.setup import prepare
from robust_nic.evaluation.summary import results_summary
from robust_nic.images import ImageError, image_size, read_image
from robust_nic.metrics import ms_ssim_scales
from robust_nic.reconstruction import smooth_reconstruction
from robust_nic.run_dir import check_writable
from robust_nic.settings import group_settings

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What every test image goes through: the real coding through `defense`, and per budget each kind's
    attack, crafted on its own source module and coded the same way."""

    settings: dict
    codec: torch.nn.Module
    defense: torch.nn.Module
    attacks: dict[str, tuple[object, torch.nn.Module]]  # kind -> (attack, module it is crafted on); {}: clean only
    budgets: list[float]
    files: list[Path]
    run_dir: Path
    rows_file: str = ROWS  # the per-image rows: rewritten after every batch, read back by a re-run
    budget_columns: dict[float, dict] = field(default_factory=dict)  # eps -> more columns of its rows
    save_images: bool = False  # each attacked image, its perturbation and a comparison figure

    @property
    def split_damage(self) -> bool:
        # Undefended runs also split the damage into the transforms' share and the rounding flips'.
        return defense_name(self.settings) == "none"

    def batch_rows(self, indices: list[int], paths: list[Path], x: torch.Tensor) -> list[list[dict]]:
        """Per image of the batch x (images of one size, files[indices]), its rows: one per budget (one in
        all without an attack); non-finite measurements are NaN. Each image gets the numbers it gets alone
        (its own seeded draws and per-image step sizes) up to the floating-point sums a batch changes."""
        clean = self.defense.code(x)
        scales = ms_ssim_scales(min(x.shape[-2:]))
        bases = [{"image": path.name} | values | {"ms_ssim_scales": scales}
                 for path, values in zip(paths, numbers("clean", clean_metrics(x, clean)), strict=True)]  # fmt: skip
        if not self.attacks:
            return [[base] for base in bases]
        targets = [_attack_target(self.settings, self.files, i, x[k : k + 1]) for k, i in enumerate(indices)]
        target = {"target": torch.cat([t["target"] for t in targets])} if targets[0] else {}
        smooth = smooth_reconstruction(self.codec, x) if self.split_damage else None
        # Each image's own seed: the same draws whatever the order of work or the batch it is in.
        names = [path.name for path in paths]
        attacks = {kind: (seeded_for(attack, names), source) for kind, (attack, source) in self.attacks.items()}
        rows: list[list[dict]] = [[] for _ in paths]
        for eps in self.budgets:
            results = {
                kind: attack_and_measure(attack.with_eps(eps), source, self.defense, x, clean, target)
                for kind, (attack, source) in attacks.items()
            }
            if "adaptive" in results:  # never weaker than the transferred attack
                results["adaptive"] = strongest_of(results["adaptive"], results["adv"])
            batch = [base | {"eps": eps} | self.budget_columns.get(eps, {}) for base in bases]
            for kind, (x_adv, attacked, metrics) in results.items():
                if smooth is not None:
                    metrics["delta_psnr_smooth"] = smooth_delta_psnr(self.codec, x, x_adv, smooth)
                for k, (row, values) in enumerate(zip(batch, numbers(kind, metrics), strict=True)):
                    row |= values
                    if self.save_images and torch.isfinite(x_adv[k]).all():
                        one = slice(k, k + 1)
                        save_attack_images(f"{paths[k].stem}_eps{eps:g}_{kind}", x[one], x_adv[one],
                                           clean.x_hat[one], attacked.x_hat[one], self.run_dir)  # fmt: skip
            for image_rows, row in zip(rows, batch, strict=True):
                image_rows.append(row)
        return rows


def evaluate(cfg: DictConfig, run_dir: Path) -> dict:
    """Evaluate a codec (with an optional defense and attack) on the test images; returns metrics.json.

    The images go through `measure_images`: batched, resumable, per_image.csv rewritten after every batch."""
    inputs = prepare(cfg, run_dir, read_images=False, resume_from=ROWS)
    settings, device, codec, files = inputs.settings, inputs.device, inputs.codec, inputs.files
    defense = build_defense(settings.get("defense"), codec).to(device)
    run = run_settings(settings)
    attack = evaluation_attack(settings)
    save_images = run.save_images and attack is not None
    if save_images:
        # Checked before the first attack: a file in the way would otherwise fail after it.
        check_writable(run_dir / "images", run_dir / "figures")
    budgets = attack_budgets(settings["attack"]) if attack is not None else []
    attacks = {} if attack is None else {
        kind: (attack, source) for kind, source in attack_sources(settings, codec, defense).items()
    }  # fmt: skip
    evaluation = Evaluation(settings, codec, defense, attacks, budgets, files, run_dir, save_images=save_images)
    rows, metrics = measure_images(evaluation, device, {"training_images": inputs.training_images})

    name = f"{settings['model']['name']}-q{settings['model']['quality']}"
    clean_means = metric_keys.values(metrics, metric_keys.CLEAN)
    description = f"robust-nic evaluation of {settings['model']['arch']} ({settings['model']['metric']}), defense={defense_name(settings)}"
    write_json(compressai_results(name, description, clean_means), run_dir / "results_compressai.json")
    export_codec(codec, run_dir / "codec.pth.tar")
    if len(budgets) > 1:
        curves = {
            kind: [(eps, metrics[metric_keys.key(kind, "delta_psnr", eps)]) for eps in budgets]
            for kind in attacks
        }
        plot_delta_psnr_vs_eps(curves, run_dir / "delta_psnr_vs_eps.png")
    log.info("results in %s", run_dir)
    return metrics


def evaluation_attack(settings: dict):
    """The attack of the `attack` group (None for attack=none), with a bar over its steps (inside the bar
    over images) unless the run says progress=false."""
    return build_attack({**settings["attack"], "progress": run_settings(settings).progress})


def measure_images(evaluation: Evaluation, device: torch.device, provenance: dict) -> tuple[list[dict], dict]:
    """Every test image through `evaluation.batch_rows`; returns the rows (in file order) and metrics.json
    (written, `provenance` added), for evaluate.py and the studies that measure images as it does.

    Images of one size are attacked and coded eval.batch_size at a time; the rows file (per_image.csv)
    is rewritten after every batch, and a re-run continues with the unfinished images. An image that cannot
    be decoded is skipped with a warning (listed in metrics.json); a run that stops (error, Ctrl-C,
    non-finite results) leaves its finished rows and a metrics.json marked partial, with the reason."""
    settings, files, run_dir = evaluation.settings, evaluation.files, evaluation.run_dir
    run = run_settings(settings)
    rows_path = run_dir / evaluation.rows_file
    read_test_image = whole_image_reader(group_settings(settings, "data"))
    names = {path.name for path in files}
    # A killed run's finished images.
    rows = [row for row in finished_rows(run_dir, evaluation.rows_file) if row["image"] in names]
    done = {row["image"] for row in rows}
    if done:
        following = next((p.name for p in files if p.name not in done), None)
        message = f"continuing the evaluation in {run_dir}: {len(done)} of {len(files)} test images are finished " + (
            f"({evaluation.rows_file}); next {following}" if following else f"({evaluation.rows_file}); none left to measure")
        log.info("%s", message)
        print(message, flush=True)
    skipped: list[str] = []
    order = {path.name: index for index, path in enumerate(files)}
    pending = [(index, path) for index, path in enumerate(files) if path.name not in done]
    try:
        with tqdm(total=len(files), initial=len(files) - len(pending), desc="images", unit="img") as bar:
            for batch in size_batches(pending, group_settings(settings, "eval").batch_size):
                # Nothing built in draws from torch's global generators (attacks seed their own, per image).
                seed_image(run.seed, batch[0][1].name)
                read = []
                for index, path in batch:
                    try:
                        read.append((index, path, read_test_image(path)))
                    except ImageError as err:
                        warnings.warn(f"skipping test image {path.name}: {err}", stacklevel=2)
                        skipped.append(path.name)
                if read:
                    x = torch.stack([image for _, _, image in read]).to(device)
                    for image_rows in evaluation.batch_rows([i for i, _, _ in read], [p for _, p, _ in read], x):
                        rows += image_rows
                    rows.sort(key=lambda row: order[row["image"]])  # stable: an image's rows keep their order
                    write_rows_csv(rows, rows_path)
                bar.update(len(batch))
        if not rows:
            raise ImageError(
                f"none of the {len(files)} test images could be read ({', '.join(skipped)}); see the warnings"
            )
        broken = nonfinite_images(rows)
        if broken:
            raise NonFiniteError(nonfinite_message(broken, len({r["image"] for r in rows}), rows_path))
    except BaseException as err:
        reason = str(err) if isinstance(err, NonFiniteError) else f"stopped by {type(err).__name__}: {err}"
        finished = [r for r in rows if r["image"] not in nonfinite_images(rows)]
        write_json(results_summary(finished, evaluation.budgets, skipped) | provenance
                   | {"partial": True, "partial_reason": reason}, run_dir / "metrics.json")  # fmt: skip
        raise

    metrics = results_summary(rows, evaluation.budgets, skipped) | provenance
    warn_capped(rows)
    write_json(metrics, run_dir / "metrics.json")
    return rows, metrics


def numbers(kind: str, metrics: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    """Per image: `kind/name` -> its value; anything not finite is written as NaN, never a number."""
    images = len(next(iter(metrics.values())))
    values = [{f"{kind}/{k}": float(v[i]) for k, v in metrics.items()} for i in range(images)]
    return [{k: v if math.isfinite(v) else math.nan for k, v in image.items()} for image in values]


def size_batches(images: list[tuple[int, Path]], batch_size: int) -> list[list[tuple[int, Path]]]:
    """(index, path) pairs grouped by image size (H, W) in file order into batches of up to batch_size,
    ordered by their first image. A file whose size cannot be read is a batch of its own (its read fails
    and skips it, alone)."""
    if batch_size <= 1:
        return [[image] for image in images]
    open_batches: dict[object, list] = {}
    batches = []
    for index, path in images:
        size = image_size(path)
        if size is None or size not in open_batches or len(open_batches[size]) == batch_size:
            batches.append([])
            if size is not None:
                open_batches[size] = batches[-1]
        (open_batches[size] if size is not None else batches[-1]).append((index, path))
    return batches


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


def nonfinite_message(broken: dict[str, str], images: int, rows_path: Path) -> str:
    where = "; ".join(f"{image}: {stages}" for image, stages in broken.items())
    return (
        f"non-finite results (NaN/inf) for {len(broken)} of {images} images, not reported as numbers: {where}. "
        f"The other images' rows are in {rows_path} and metrics.json is marked partial. "
        "A NaN decode on a GPU can be an entropy-coder desync (re-run with device=cpu); else check the codec's weights."
    )


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
