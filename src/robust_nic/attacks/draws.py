"""An attack's random draws (random starts, restarts, the noise baseline): one generator for the whole
batch, or one per image so that each image of a batch gets exactly the draws it gets alone (batched
evaluation seeds every image by its name)."""

from __future__ import annotations

import torch


class Draws:
    """Draws shaped like a batch (N, ...). With one generator per image, image i's slice is drawn from
    its own generator as if it were alone; with a single one, the whole batch is drawn at once."""

    def __init__(self, generators: list[torch.Generator]):
        self.generators = generators

    @classmethod
    def seeded(cls, seed: int | tuple[int, ...] | None, device: torch.device) -> Draws:
        """None: a fresh random seed; an int: one generator for the batch; a tuple: one per image."""
        seeds = seed if isinstance(seed, tuple) else (seed,)
        generators = []
        for value in seeds:
            generator = torch.Generator(device=device)
            if value is None:
                generator.seed()
            else:
                generator.manual_seed(value)
            generators.append(generator)
        return cls(generators)

    @property
    def per_image(self) -> bool:
        return isinstance(self.generators, list) and len(self.generators) > 1

    def rand(self, like: torch.Tensor, only: torch.Tensor | None = None) -> torch.Tensor:
        return self._draw(torch.rand, like, only)

    def randn(self, like: torch.Tensor, only: torch.Tensor | None = None) -> torch.Tensor:
        return self._draw(torch.randn, like, only)

    def _draw(self, sample, like: torch.Tensor, only: torch.Tensor | None) -> torch.Tensor:
        """A draw shaped like `like`. `only` (N,) bool: with per-image generators, the other images get
        zeros and their generators do not advance (their later draws stay the ones they get alone)."""
        options = {"device": like.device, "dtype": like.dtype}
        if not self.per_image:
            return sample(like.shape, generator=self.generators[0], **options)
        if len(self.generators) != like.shape[0]:
            raise ValueError(f"{len(self.generators)} per-image generators for a batch of {like.shape[0]}")
        wanted = [True] * like.shape[0] if only is None else only.tolist()
        one = (1, *like.shape[1:])
        return torch.cat([
            sample(one, generator=generator, **options) if take else torch.zeros(one, **options)
            for generator, take in zip(self.generators, wanted, strict=True)
        ])  # fmt: skip
