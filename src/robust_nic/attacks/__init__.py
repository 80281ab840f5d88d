"""One attack API for evaluation and adversarial finetuning.

from robust_nic.attacks import build_attack
attack = build_attack(cfg.attack)      # None for attack=none
x_adv = attack(codec, x)               # 8-bit, within budget; codec left as found
"""

from robust_nic.attacks.attack import OPTIMIZERS, Attack, AttackConfigError, AttackResult
from robust_nic.attacks.budget import ATOL, NORMS, Budget
from robust_nic.attacks.engine import ZeroGradientError
from robust_nic.attacks.factory import KEYS, build_attack
from robust_nic.attacks.objectives import DISTANCES, OBJECTIVES, REFERENCES, Objective, ObjectiveError
from robust_nic.reconstruction import PROXIES, ProxyError

__all__ = [
    "ATOL",
    "DISTANCES",
    "KEYS",
    "NORMS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "PROXIES",
    "REFERENCES",
    "Attack",
    "AttackConfigError",
    "AttackResult",
    "Budget",
    "Objective",
    "ObjectiveError",
    "ProxyError",
    "ZeroGradientError",
    "build_attack",
]
