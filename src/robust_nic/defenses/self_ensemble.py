"""Geometric self-ensemble: code every dihedral transform of the input, keep the best reconstruction.

The encoder codes each candidate transform, decodes it, inverts the transform and keeps, per image, the
candidate closest (MSE) to the input; the decoder reads the transform index from the container and
inverts it. The index is side information: ceil(log2(n)) bits per image for n candidate transforms.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from compressai.models import CompressionModel
from torch import Tensor

from robust_nic.coding import Coded, code, crop, ensure_updated, forward_padded, pad, sync
from robust_nic.defenses import container, dihedral
from robust_nic.defenses.base import DEFENSES, Defense
from robust_nic.metrics import mse_per_image, to_8bit
from robust_nic.scoped import eval_mode
from robust_nic.settings import ConfigError


@dataclass
class SelfEnsembleCoded(Coded):
    """Coded plus the dihedral transform kept per image."""

    transforms: Tensor | None = None


@dataclass(frozen=True)
class SelfEnsembleOptions:
    transforms: list[int] = field(default_factory=lambda: list(range(8)))  # dihedral indices 0..7

    def __post_init__(self):
        try:
            indices = [dihedral.check_index(k) for k in self.transforms]
        except ValueError as err:
            raise ConfigError(f"defense.transforms={list(self.transforms)}: {err}") from err
        if not indices or len(set(indices)) != len(indices):
            raise ConfigError(f"defense.transforms={indices} must be distinct indices in 0..7, at least one")


@DEFENSES.register("self_ensemble", options=SelfEnsembleOptions)
class SelfEnsemble(Defense):
    name = "self_ensemble"

    def __init__(self, codec: CompressionModel, transforms: Sequence[int] = tuple(range(8))):
        super().__init__(codec)
        self.transforms = SelfEnsembleOptions([int(k) for k in transforms]).transforms  # checks the values

    @property
    def index_bits(self) -> int:
        """Side information per image: ceil(log2(n)) bits (0 for a single transform)."""
        return math.ceil(math.log2(len(self.transforms)))

    @property
    def description(self) -> str:
        names = ", ".join(dihedral.NAMES[k] for k in self.transforms)
        return f"self-ensemble over {len(self.transforms)} dihedral transforms ({names}); +{self.index_bits} bits/image"

    def config(self) -> dict:
        return {"name": self.name, "transforms": list(self.transforms)}

    # -- differentiable proxy -------------------------------------------------------------------------

    def forward(self, x: Tensor) -> dict:
        """All candidates through the codec forward; per image the one closest to x (hard argmin).

        Gradients flow through the chosen candidate only. Likelihood maps are inverse-transformed to a
        common (upright) layout so they can be selected per image; their per-image sums (the rate) do not
        depend on the layout. The index bits are not in the likelihoods (a constant).
        """
        x_hats, likelihoods = [], []
        for k in self.transforms:
            out = forward_padded(self.codec, dihedral.transform(x, k))
            x_hats.append(dihedral.inverse(out["x_hat"], k))
            likelihoods.append({name: dihedral.inverse(p, k) for name, p in out["likelihoods"].items()})
        with torch.no_grad():
            errors = torch.stack([mse_per_image(x_hat, x) for x_hat in x_hats])
            choice = errors.argmin(0)  # first minimum: ties keep the earlier transform
        rows = torch.arange(x.shape[0], device=x.device)
        chosen = {}
        for name in likelihoods[0]:
            maps = [lk[name] for lk in likelihoods]
            if any(m.shape != maps[0].shape for m in maps):
                raise RuntimeError(f"likelihood maps {name!r} differ in shape across transforms")
            chosen[name] = torch.stack(maps)[choice, rows]
        transforms = torch.tensor(self.transforms, device=x.device)[choice]
        return {"x_hat": torch.stack(x_hats)[choice, rows], "likelihoods": chosen, "transforms": transforms}

    # -- real coding ----------------------------------------------------------------------------------

    @torch.no_grad()
    def select(self, x: Tensor, update: bool = False) -> tuple[dict, Tensor, Tensor, Tensor, float]:
        """Encoder: code every candidate, keep per image the best decoded one.

        Returns (compressed, x_hat, codec bits per image, bpp_est per image, encode seconds).
        """
        x = to_8bit(x)
        candidates = []
        for i, k in enumerate(self.transforms):
            coded = code(self.codec, dihedral.transform(x, k), update=update and i == 0)
            candidates.append(coded)
        x_hats = torch.stack(
            [dihedral.inverse(c.x_hat, k) for c, k in zip(candidates, self.transforms, strict=True)]
        )
        choice = torch.stack([mse_per_image(x_hat, x) for x_hat in x_hats]).argmin(0).cpu()
        strings, bits, bpp_est = [], [], []
        for i, j in enumerate(choice.tolist()):
            chosen = candidates[j]
            streams = [stream[i] for stream in chosen.strings]
            strings.append(container.pack(j, streams))
            bits.append(8.0 * sum(len(s) for s in streams))
            bpp_est.append(chosen.bpp_est[i])
        rows = torch.arange(x.shape[0], device=choice.device)
        compressed = {
            "strings": strings,
            "shape": {
                "image": tuple(x.shape[-2:]),
                "codec": {k: c.shape for k, c in zip(self.transforms, candidates, strict=True)},
            },
            "transforms": torch.tensor(self.transforms)[choice],
        }
        encode_s = sum(c.encode_s + c.decode_s for c in candidates)  # the encoder decodes to choose
        x_hat = x_hats[choice.to(x.device), rows.to(x.device)]
        return compressed, x_hat, torch.tensor(bits, dtype=torch.float64), torch.stack(bpp_est), encode_s

    def compress(self, x: Tensor, update: bool = False) -> dict:
        """{"strings": one container (bytes) per image, "shape": header, "transforms": chosen indices}."""
        return self.select(x, update=update)[0]

    @torch.no_grad()
    def decompress(self, strings: list[bytes], shape: dict) -> dict:
        """Decode containers from compress(): {"x_hat" (8-bit), "transforms"}."""
        height, width = shape["image"]
        parsed = [container.unpack(s) for s in strings]
        positions = torch.tensor([index for index, _ in parsed])
        if len(parsed) and int(positions.max()) >= len(self.transforms):
            raise ValueError(f"transform index {int(positions.max())} out of range for {self.transforms}")
        x_hat = None
        with eval_mode(self.codec):
            ensure_updated(self.codec)
            for j, k in enumerate(self.transforms):
                members = [i for i, (index, _) in enumerate(parsed) if index == j]
                if not members:
                    continue
                streams = [[parsed[i][1][s] for i in members] for s in range(len(parsed[members[0]][1]))]
                dec = self.codec.decompress(streams, shape["codec"][k])["x_hat"]
                size = (width, height) if dihedral.swaps_hw(k) else (height, width)
                _, unpad = pad(dec.new_zeros(1, 1, *size))  # the unpad spec code() used
                recon = to_8bit(dihedral.inverse(crop(dec, unpad), k))
                if x_hat is None:
                    x_hat = recon.new_zeros(len(parsed), *recon.shape[1:])
                x_hat[members] = recon
        transforms = (
            torch.tensor(self.transforms)[positions] if len(parsed) else torch.zeros(0, dtype=torch.long)
        )
        return {"x_hat": x_hat, "transforms": transforms}

    @torch.no_grad()
    def code(self, x: Tensor, update: bool = False) -> Coded:
        """Select, pack, then really decode the containers; bpp = (codec bits + index bits) / pixels."""
        compressed, _, bits, bpp_est, encode_s = self.select(x, update=update)
        sync(x)
        start = time.perf_counter()
        dec = self.decompress(compressed["strings"], compressed["shape"])
        sync(x)
        decode_s = time.perf_counter() - start
        num_pixels = x.shape[-2] * x.shape[-1]
        side = self.index_bits / num_pixels
        return SelfEnsembleCoded(
            dec["x_hat"],
            (bits + self.index_bits) / num_pixels,
            bpp_est + side,
            encode_s,
            decode_s,
            compressed["strings"],
            compressed["shape"],
            transforms=dec["transforms"],
        )
