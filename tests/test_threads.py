"""The CPU thread count is a visible setting: threads=, else OMP_NUM_THREADS, else all cores; printed."""

from __future__ import annotations

import logging

import pytest
import torch

from robust_nic.config import ConfigError
from robust_nic.threads import available_cores, configure_threads


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_setting_wins_then_omp_then_all_cores(monkeypatch, caplog):
    logger = logging.getLogger("robust_nic")
    # An in-process Hydra job earlier in the test run may have reconfigured logging; listen directly.
    monkeypatch.setattr(logger, "disabled", False)
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="robust_nic")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert configure_threads(1) == 1 and torch.get_num_threads() == 1
    assert "torch CPU threads: 1 (threads=1" in caplog.text
    assert configure_threads(None) == 2 and torch.get_num_threads() == 2
    assert "OMP_NUM_THREADS=2" in caplog.text
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert configure_threads(None) == available_cores() == torch.get_num_threads()
    logger.removeHandler(caplog.handler)


@pytest.mark.parametrize("requested, env", [(0, None), (None, "0"), (None, "two")])
def test_nonsense_thread_counts_are_refused(monkeypatch, requested, env):
    if env is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    with pytest.raises(ConfigError, match="threads|OMP_NUM_THREADS"):
        configure_threads(requested)
