"""Build an Attack from the Hydra `attack` group, so evaluation and finetuning call the same thing."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from robust_nic.attacks.attack import Attack, AttackConfigError
from robust_nic.attacks.budget import Budget
from robust_nic.attacks.objectives import Objective, ObjectiveError

# attack.* keys this factory reads; other keys (owned by evaluation or finetuning) are ignored.
KEYS = (
    "name", "norm", "eps", "linf", "steps", "lr", "alpha", "decay", "objective", "reference", "distance",
    "proxy", "restarts", "random_start", "target_bpp", "seed", "progress", "warmup_steps",
)  # fmt: skip


def _plain(cfg: Mapping) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        pass
    return dict(cfg)


def _eps(value) -> float | torch.Tensor:
    """A float, or one eps per image (tensor or list)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(value, dtype=torch.float32) if isinstance(value, (list, tuple)) else float(value)


def build_attack(cfg: Mapping | None) -> Attack | None:
    """An Attack from the `attack` config dict; None for no config or `name: none` (no attack)."""
    if not cfg:
        return None
    cfg = _plain(cfg)
    name = cfg.get("name", "none")
    if name in (None, "none"):
        return None
    defaults = Attack()
    get = lambda key, default: default if cfg.get(key) is None else cfg[key]  # noqa: E731
    try:
        budget = Budget(norm=get("norm", "rms"), eps=_eps(get("eps", 0.01)), linf=cfg.get("linf"))
        objective = Objective(
            kind=get("objective", "distortion"),
            reference=get("reference", "recon"),
            distance=get("distance", "mse"),
            target_bpp=cfg.get("target_bpp"),
        )
    except (ValueError, ObjectiveError) as err:
        raise AttackConfigError(str(err)) from err
    return Attack(
        name=name,
        budget=budget,
        objective=objective,
        proxy=get("proxy", defaults.proxy),
        steps=int(get("steps", defaults.steps)),
        lr=float(get("lr", defaults.lr)),
        alpha=cfg.get("alpha"),
        decay=float(get("decay", defaults.decay)),
        restarts=int(get("restarts", defaults.restarts)),
        random_start=bool(get("random_start", name == "pgd")),
        seed=cfg.get("seed", defaults.seed),
        progress=bool(get("progress", False)),
        warmup_steps=int(get("warmup_steps", 0)),
    )
