"""The layers of docs/architecture.md hold: import-linter's contract (.importlinter) is kept, and it names every
module of the package, so a new module cannot slip past it."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_no_module_imports_from_a_layer_above_it():
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    lint_imports = Path(sys.executable).parent / "lint-imports"  # import-linter's command, beside this Python
    done = subprocess.run([str(lint_imports), "--config", str(ROOT / ".importlinter")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and "1 kept, 0 broken" in done.stdout, done.stdout[-3000:]


def test_the_contract_names_every_module():
    contract = configparser.ConfigParser()
    contract.read(ROOT / ".importlinter")
    layered = {name.strip() for line in contract["importlinter:contract:layers"]["layers"].splitlines()
               for name in line.split(":") if name.strip()}  # fmt: skip
    package = ROOT / "src" / "robust_nic"
    modules = {f"robust_nic.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {f"robust_nic.{p.name}" for p in package.iterdir() if (p / "__init__.py").is_file() and p.name != "conf"}
    assert modules <= layered, sorted(modules - layered)
