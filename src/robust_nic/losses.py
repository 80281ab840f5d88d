"""Rate-distortion loss with CompressAI's conventions."""

from __future__ import annotations

import torch
from torch import nn

from robust_nic.coding import bpp_from_likelihoods
from robust_nic.metrics import ms_ssim_loss


class RateDistortionLoss(nn.Module):
    """`lambda * 255^2 * MSE + bpp` (metric mse) or `lambda * (1 - MS-SSIM) + bpp` (metric ms-ssim)."""

    def __init__(self, metric: str = "mse", lmbda: float = 0.0067):
        super().__init__()
        if metric not in ("mse", "ms-ssim"):
            raise ValueError(f"unknown loss metric {metric!r}; choose loss=mse or loss=ms_ssim")
        self.metric, self.lmbda = metric, float(lmbda)

    def forward(self, output: dict, target: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = target.shape[-2:]
        bpp = bpp_from_likelihoods(output["likelihoods"], height * width).mean()
        x_hat = output["x_hat"]
        mse = torch.mean((x_hat - target) ** 2)
        losses = {"bpp_loss": bpp, "mse_loss": mse}
        if self.metric == "mse":
            distortion = 255**2 * mse
        else:
            # As many of MS-SSIM's 5 scales as the crop allows (all five from 161 px; the settings check
            # says so at the start when data.patch_size is smaller).
            distortion = ms_ssim_loss(x_hat, target).mean()
            losses["ms_ssim_loss"] = distortion
        losses["loss"] = self.lmbda * distortion + bpp
        return losses
