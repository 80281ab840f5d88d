"""PSNR and MS-SSIM as reported: NaN stays NaN, only bit-identical images are capped, small images get
MS-SSIM over fewer scales with a label instead of a silent NaN."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import photo
from pytorch_msssim import ms_ssim as reference_ms_ssim

from robust_nic import metrics
from robust_nic.evaluation.measure import PSNR_CAP, capped_psnr
from robust_nic.evaluation.outputs import mean_of
from robust_nic.metrics import ms_ssim, ms_ssim_scales, psnr_from_mse, to_8bit


def image(side_h: int, side_w: int) -> torch.Tensor:
    return torch.from_numpy(photo("coffee.png")[:side_h, :side_w].copy()).permute(2, 0, 1)[None].float() / 255


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
    assert mean_of(rows[:2], "clean/psnr") == pytest.approx((rows[0]["clean/psnr"] + rows[1]["clean/psnr"]) / 2)


def test_ms_ssim_matches_pytorch_msssim_on_large_images():
    x = image(200, 170)
    y = to_8bit(x + 0.05 * torch.randn_like(x))
    assert ms_ssim_scales(170) == 5
    assert torch.equal(ms_ssim(x, y), reference_ms_ssim(to_8bit(x), y, data_range=1.0, size_average=False).double())


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
