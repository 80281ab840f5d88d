"""The naming scheme of metric_keys: which names files may hold, and how older names are read."""

from __future__ import annotations

import pytest

from robust_nic.config import write_json
from robust_nic.evaluation import metric_keys
from robust_nic.evaluation.report import find_runs


@pytest.mark.parametrize(
    "name",
    ["test/adv/delta_psnr", "test/clean/ms_ssim", "test/adaptive/eps_0.01/delta_ms_ssim_db", "test/images",
     "test/adv/won_by_pgd", "test/adaptive/from_transfer", "skipped", "test/noise/eps_1e-05/psnr_in"],
)  # fmt: skip
def test_keys_of_the_scheme_are_declared(name):
    assert metric_keys.declared_key(name)


@pytest.mark.parametrize(
    "name",
    ["test/adv/ms_ssim_db_delta", "test/adv/psnr_attacked", "test/adv/ms-ssim", "test/clean/delta_psnr",
     "test/attacked/psnr", "test/adv/eps_x/psnr", "psnr", "test/adv/won_by_", "test/psnr"],
)  # fmt: skip
def test_old_and_ad_hoc_keys_are_not(name):
    assert not metric_keys.declared_key(name)


def test_per_image_columns():
    assert all(metric_keys.declared_column(c) for c in ("image", "eps", "clean/bpp_est", "adv/delta_bpp_pct"))
    assert not any(metric_keys.declared_column(c) for c in ("psnr_clean", "clean/attack_s", "adv/psnr_drop"))


def test_old_names_are_read_as_todays_with_the_same_numbers(tmp_path):
    old = {"test/adv/ms_ssim_db_delta": 0.25, "test/adaptive/eps_0.01/ms_ssim_db_delta": 0.5, "test/adv/psnr": 20.0}
    assert metric_keys.upgrade_names(old) == {
        "test/adv/delta_ms_ssim_db": 0.25, "test/adaptive/eps_0.01/delta_ms_ssim_db": 0.5, "test/adv/psnr": 20.0}  # fmt: skip
    assert metric_keys.upgrade_names({"adv/ms_ssim_db_delta": "0.1"}) == {"adv/delta_ms_ssim_db": "0.1"}
    # A report over an old run directory sees today's keys.
    (tmp_path / "config.yaml").write_text("model: {arch: bmshj2018-hyperprior, quality: 1}\n")
    write_json({"test/clean/psnr": 30.0, **old}, tmp_path / "metrics.json")
    (run,) = find_runs([tmp_path])
    assert run.metrics["test/adv/delta_ms_ssim_db"] == 0.25 and "test/adv/ms_ssim_db_delta" not in run.metrics

