"""Several attacks run as one setting (`attack=worst_case`): the evaluation keeps, per image, the member
whose example damages the real bitstream most, and says which one won (robust_nic.evaluation.attacked).

Members inherit every `attack.*` key of the suite (budget, objective, seed...) and override their own
(name, proxy, steps...), so a suite is measured at one budget like any single attack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from robust_nic.attacks.attack import Attack, AttackConfigError
from robust_nic.attacks.budget import Eps


@dataclass(frozen=True)
class AttackSuite:
    name: str
    members: dict[str, Attack]

    @property
    def eps(self) -> Eps:
        return next(iter(self.members.values())).eps

    @property
    def budget(self):
        return next(iter(self.members.values())).budget

    def with_eps(self, eps: Eps) -> AttackSuite:
        return dataclasses.replace(self, members={k: a.with_eps(eps) for k, a in self.members.items()})

    def __call__(self, *args, **kwargs):
        raise AttackConfigError(
            f"attack={self.name} runs several attacks and keeps each image's strongest on the real bitstream: "
            "evaluate.py (and study=noise) measure it; training and the other studies take one attack "
            "(e.g. attack=chen2023 or attack=pgd)"
        )
