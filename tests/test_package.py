"""robust-nic installs like a package: the wheel, installed outside the checkout, trains and evaluates from
another directory with the configs it ships."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def run(command: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_trains_and_evaluates_outside_the_checkout(tmp_path):
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT), "-w", str(wheels)],
        tmp_path, env)  # fmt: skip
    # The dependencies are this interpreter's; the package itself comes only from the wheel.
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env)
    python, command = venv / "bin" / "python", venv / "bin" / "robust-nic"
    run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(next(wheels.glob("robust_nic-*.whl")))], tmp_path, env)
    where = run([str(python), "-c", "import robust_nic; print(robust_nic.__file__)"], work, env)
    assert str(venv) in where and str(ROOT) not in where

    run([str(command), "train", "trainer.max_steps=2", "trainer.val_check_interval=2", "data.max_val_images=1",
         "model.channels=[16,24]", "logger=none", "hydra.run.dir=trained"], work, env)  # fmt: skip
    checkpoint = work / "trained" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    run([str(command), "evaluate", f"model.checkpoint={checkpoint}", "max_images=1", "attack=pgd", "attack.steps=2",
         "attack.eps=0.01", "save_images=false", "hydra.run.dir=evaluated"], work, env)  # fmt: skip
    metrics = json.loads((work / "evaluated" / "metrics.json").read_text())
    assert metrics["test/clean/bpp"] > 0 and metrics["test/adv/delta_psnr"] == metrics["test/adv/delta_psnr"]
