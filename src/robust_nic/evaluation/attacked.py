"""One attack row's measurement, shared by evaluate.py and the studies: craft x_adv on a source (the codec,
or the defense for adaptive attacks), code it through the defense with the real coder, measure the damage."""

from __future__ import annotations

import dataclasses
import logging
import time

import torch

from robust_nic.attacks import AttackSuite
from robust_nic.evaluation.measure import adversarial_metrics, code_or_nan

log = logging.getLogger(__name__)


def defense_name(settings: dict) -> str:
    """The `defense` group's name (`none` without one, e.g. settings composed for a study of codecs)."""
    return (settings.get("defense") or {"name": "none"})["name"]


def attack_sources(settings: dict, codec, defense) -> dict[str, torch.nn.Module]:
    """Which module each attack row is crafted on: the bare codec (`adv`, transferred to any defense)
    and, for a real defense, the defense itself (`adaptive`: the attacker knows the defense). The random
    noise baseline does not adapt to anything: it gets no adaptive rows (they would be copies)."""
    sources = {"adv": codec}
    defended = defense_name(settings)
    if defended != "none":
        if (settings.get("attack") or {}).get("name") == "noise":
            log.info(
                "attack=noise is a random baseline that does not adapt to defense=%s: no adaptive rows",
                defended,
            )
        else:
            sources["adaptive"] = defense
    return sources


def attack_and_measure(attack, source, coder, x, clean, target: dict | None = None):
    """Craft x_adv on `source` (codec or defense), code it with `coder`, measure the damage.

    Returns (x_adv, attacked Coded, per-image metrics incl. attack_s). A non-finite x_adv is not an image:
    it is measured as NaN, never handed to the entropy coder. An AttackSuite (attack=worst_case) runs
    every member and keeps, per image, the one that damages the real bitstream most."""
    if isinstance(attack, AttackSuite):
        return strongest({label: attack_and_measure(member, source, coder, x, clean, target)
                          for label, member in attack.members.items()})  # fmt: skip
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


def _pick(take: torch.Tensor, new, old):
    """Per image: `new` where `take`, else `old` (tensors of any rank, batch first)."""
    return torch.where(take.to(old.device).view(-1, *[1] * (old.dim() - 1)), new, old)


def strongest(results: dict[str, tuple]) -> tuple:
    """Per image, the result with the highest delta_psnr on the real bitstream (ties and NaN keep the
    earlier member). `won_by_<label>` (1/0) says which member it is; `attack_s` counts them all."""
    labels = list(results)
    x_adv, coded, metrics = results[labels[0]]
    winner = torch.zeros_like(metrics["delta_psnr"], dtype=torch.long)
    seconds = sum(result[2]["attack_s"] for result in results.values())
    for index, label in enumerate(labels[1:], start=1):
        n_x, n_coded, n_metrics = results[label]
        take = n_metrics["delta_psnr"] > metrics["delta_psnr"]  # NaN compares False
        metrics = {k: _pick(take, n_metrics[k], v) for k, v in metrics.items()}
        x_adv = _pick(take, n_x, x_adv)
        coded = dataclasses.replace(coded, x_hat=_pick(take, n_coded.x_hat, coded.x_hat))
        winner = torch.where(take.to(winner.device), index, winner)
    metrics["attack_s"] = seconds
    for index, label in enumerate(labels):
        metrics[f"won_by_{label}"] = (winner == index).double()
    return x_adv, coded, metrics


def strongest_of(adaptive: tuple, transferred: tuple) -> tuple:
    """Per image, the adaptive attack's result or the transferred example's, whichever damages the real
    bitstream through the defense more (delta_psnr). An attacker who knows the defense can always also try
    the transferred example, and the adaptive attack picks its iterates through a proxy that can miss (one
    image measured 11.3 dB adaptive vs 13.9 dB transferred). `from_transfer` (0/1) says which was kept;
    `attack_s` counts both attacks."""
    (a_x, a_coded, a_metrics), (t_x, t_coded, t_metrics) = adaptive, transferred
    take = t_metrics["delta_psnr"] > a_metrics["delta_psnr"]  # NaN compares False: a broken result stays
    metrics = {k: _pick(take, t_metrics[k], a_metrics[k]) for k in a_metrics}
    metrics["attack_s"] = a_metrics["attack_s"] + t_metrics["attack_s"]
    metrics["from_transfer"] = take.double()
    x_hat = _pick(take, t_coded.x_hat, a_coded.x_hat)
    return _pick(take, t_x, a_x), dataclasses.replace(a_coded, x_hat=x_hat), metrics
