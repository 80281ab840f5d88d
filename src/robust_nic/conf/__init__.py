"""The Hydra configs; the groups' defaults come from their settings dataclasses (robust_nic.settings),
stored before Hydra composes as the `schema/<group>` configs that the YAMLs extend."""

from robust_nic.settings import store_schemas

store_schemas()
