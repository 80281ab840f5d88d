"""PSNR and MS-SSIM as reported: NaN stays NaN, only bit-identical images are capped, small images get
MS-SSIM over fewer scales with a label instead of a silent NaN."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import photo
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
)

from robust_nic import metrics
from robust_nic.evaluation.measure import PSNR_CAP, capped_psnr
from robust_nic.evaluation.outputs import mean_of
from robust_nic.metrics import (
    MS_SSIM_WEIGHTS,
    ms_ssim,
    ms_ssim_betas,
    ms_ssim_loss,
    ms_ssim_scales,
    psnr,
    psnr_from_mse,
    to_8bit,
)


def image(side_h: int, side_w: int, name: str = "coffee.png") -> torch.Tensor:
    return torch.from_numpy(photo(name)[:side_h, :side_w].copy()).permute(2, 0, 1)[None].float() / 255


def test_psnr_is_nan_for_a_nan_or_infinite_mse_and_capped_only_when_identical():
    mse = torch.tensor([0.0, 1e-4, math.nan, math.inf])
    values = psnr_from_mse(mse)
    assert values[0] == math.inf and values[1] == pytest.approx(40.0)
    assert math.isnan(values[2]) and math.isnan(values[3])
    x = image(64, 64)
    assert capped_psnr(x, x).item() == PSNR_CAP  # bit-identical
    broken = torch.full_like(x, math.nan)
    assert math.isnan(capped_psnr(x, broken).item())  # was PSNR_CAP (100 dB)


def test_one_nan_image_of_three_no_longer_averages_to_the_anomalous_48_9_db():
    """A capped 100 dB PSNR for one NaN image of three once made a 48.9 dB mean: 3 x 48.92 - 100 = 2 x 23.4 dB."""
    x = image(64, 64)
    decoded = [to_8bit(x + 0.07 * torch.randn_like(x)) for _ in range(2)] + [torch.full_like(x, math.nan)]
    rows = [{"clean/psnr": float(capped_psnr(x, d))} for d in decoded]
    assert all(20 < r["clean/psnr"] < 27 for r in rows[:2]) and math.isnan(rows[2]["clean/psnr"])
    assert math.isnan(mean_of(rows, "clean/psnr"))
    assert mean_of(rows[:2], "clean/psnr") == pytest.approx(
        (rows[0]["clean/psnr"] + rows[1]["clean/psnr"]) / 2
    )


@pytest.mark.parametrize(("name", "side", "scales"), [("coffee.png", 400, 5), ("astronaut.png", 200, 5),
                                                      ("chelsea.png", 128, 4), ("coffee.png", 64, 3)])  # fmt: skip
def test_ms_ssim_and_psnr_are_torchmetrics_on_real_photos(name, side, scales):
    """Ours equals torchmetrics' own MS-SSIM call (fewer scales: the first betas renormalised) and its PSNR."""
    x = image(side, side + 30, name)
    y = to_8bit(x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    assert ms_ssim_scales(side) == scales and sum(ms_ssim_betas(scales)) == pytest.approx(1.0, abs=1e-3)
    reference = multiscale_structural_similarity_index_measure(
        to_8bit(x), y, data_range=1.0, reduction="none", betas=ms_ssim_betas(scales), normalize="relu"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fewer-scales warning
        ours = ms_ssim(x, y)
    assert 0.5 < ours.item() < 1 and (ours - reference.double()).abs().max().item() < 1e-6
    reference_psnr = peak_signal_noise_ratio(to_8bit(x).double(), y.double(), data_range=1.0)
    assert psnr(x, y).item() == reference_psnr.item() and 20 < reference_psnr < 30
    assert ms_ssim_betas(5) == MS_SSIM_WEIGHTS


@pytest.mark.parametrize("side", [200, 48, 8, 3])
def test_ms_ssim_loss_has_finite_gradients_for_identical_inverted_and_tiny_images(side):
    """Identical images (every term 1), an inverted image (negative contrast-structure terms, floored) and
    tiny images down to 3 px: the loss and its gradient stay finite."""
    x = image(side, side)
    noisy = to_8bit(x + 0.1 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)))
    for other, low, high in [(x, 0.0, 1e-6), (1 - x, 0.3, 1.0), (noisy, 0.01, 0.9)]:
        a = x.clone().requires_grad_()
        loss = ms_ssim_loss(a, other)
        loss.sum().backward()
        assert low <= loss.item() <= high and torch.isfinite(a.grad).all(), (side, loss)
        assert side == 200 or a.grad.abs().max() > 0  # 200 px inverted: every term floored, a flat loss


@pytest.mark.parametrize(("side", "scales"), [(160, 4), (96, 4), (70, 3), (40, 2), (16, 1), (8, 2)])
def test_small_images_get_ms_ssim_over_fewer_scales_with_one_warning(monkeypatch, side, scales):
    monkeypatch.setattr(metrics, "_warned_scales", set())
    x = image(side, side + 5)
    y = to_8bit(x + 0.05 * torch.randn_like(x))
    assert ms_ssim_scales(side) == scales
    with pytest.warns(UserWarning, match=f"uses {scales} of its 5 scales"):
        value = ms_ssim(x, y).item()
    assert 0 < value < 1 and ms_ssim(x, x).item() == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per scale count, not per image
        ms_ssim(y, x)
    assert math.isnan(ms_ssim(x, torch.full_like(x, math.nan)).item())  # NaN only for a NaN input
