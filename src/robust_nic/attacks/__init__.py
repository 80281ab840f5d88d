"""One attack API for evaluation and adversarial finetuning.

from robust_nic.attacks import build_attack
attack = build_attack(cfg.attack)      # None for attack=none
x_adv = attack(codec, x)               # 8-bit, within budget; codec left as found
"""

from robust_nic.attacks.attack import Attack, AttackConfigError, AttackResult
from robust_nic.attacks.budget import ATOL, NORMS, Budget
from robust_nic.attacks.engine import ZeroGradientError
from robust_nic.attacks.factory import SHARED_KEYS, build_attack, with_defaults
from robust_nic.attacks.objectives import DISTANCES, OBJECTIVES, REFERENCES, Objective, ObjectiveError
from robust_nic.attacks.optimizers import OPTIMIZERS, load_optimizers
from robust_nic.attacks.suite import AttackSuite
from robust_nic.reconstruction import PROXIES, ProxyError

__all__ = [
    "ATOL",
    "DISTANCES",
    "SHARED_KEYS",
    "NORMS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "PROXIES",
    "REFERENCES",
    "Attack",
    "AttackConfigError",
    "AttackResult",
    "AttackSuite",
    "Budget",
    "Objective",
    "ObjectiveError",
    "ProxyError",
    "ZeroGradientError",
    "build_attack",
    "load_optimizers",
    "with_defaults",
]

load_optimizers()  # every built-in optimiser registered once the package is imported
