"""Golden regression: evaluate.py's metrics.json for a fixed codec, image, attack and seed.

Silent numeric drift (a metric, the coder, the attack, the budget) fails here. After a deliberate change,
regenerate and check the diff of tests/expected/golden_metrics.json:

    ROBUST_NIC_REGENERATE_GOLDEN=1 python -m pytest tests/test_golden.py

The codec (tests/expected/golden_codec.pth.tar) is a 16/24-channel bmshj2018-hyperprior trained for 200
steps by conftest.train_small_codec(200, (16, 24)); it is stored, not retrained, so the test does not
depend on training being bit-identical across CPUs.
"""

from __future__ import annotations

import json
import math
import os

import pytest
from conftest import ROOT, compose_config

from robust_nic.evaluation.runner import evaluate

EXPECTED = ROOT / "tests" / "expected"
CODEC = EXPECTED / "golden_codec.pth.tar"
GOLDEN = EXPECTED / "golden_metrics.json"
OVERRIDES = [
    "model=tiny", "model.channels=[16,24]", f"model.checkpoint={CODEC}", "data=samples",
    "data.heldout_photos=[chelsea.png]", "attack=pgd", "attack.steps=5", "attack.eps=0.01", "attack.seed=0",
    "seed=0", "save_images=false", "progress=false", "device=cpu",
]  # fmt: skip
# Tolerances absorb float differences between CPUs (a pixel or a coded byte), not real drift: clamping
# the attack objective's output to [0, 1] moved delta_psnr by 0.006 dB and delta_bpp_pct by 0.05 here.
DB_TOLERANCE = 0.003
RELATIVE_TOLERANCE = 3e-4


def comparable(metrics: dict) -> dict[str, float]:
    """The numeric results, without wall-clock times."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not k.endswith("_s")}


def test_evaluation_matches_the_golden_metrics(tmp_path):
    metrics = comparable(evaluate(compose_config("evaluate", OVERRIDES), tmp_path))
    if os.environ.get("ROBUST_NIC_REGENERATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"regenerated {GOLDEN}; check its diff")
    expected = json.loads(GOLDEN.read_text())
    assert sorted(metrics) == sorted(expected), "metric keys changed: regenerate if deliberate (see docstring)"
    drifted = {}
    for key, want in expected.items():
        got = metrics[key]
        if math.isnan(want) or math.isnan(got):
            ok = math.isnan(want) and math.isnan(got)
        elif "psnr" in key or "db" in key:
            ok = abs(got - want) <= DB_TOLERANCE
        elif key.endswith("_pct"):  # one coded byte moves it by 0.012 points
            ok = abs(got - want) <= 0.03
        else:
            ok = abs(got - want) <= RELATIVE_TOLERANCE * max(abs(want), 1e-3)
        if not ok:
            drifted[key] = (want, got)
    assert not drifted, f"metrics drifted from {GOLDEN.name} (expected, got): {drifted}"
