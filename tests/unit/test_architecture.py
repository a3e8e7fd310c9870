"""The architecture contract (.importlinter): layers cli -> api -> pipeline -> stages -> ... -> errors.

Checked with import-linter on the real package, and on a copy where a low
layer imports a high one, which must fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT = str(Path(sys.executable).parent / "lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([LINT, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "mlsys", tmp_path / "mlsys", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    config = tmp_path / "mlsys" / "models" / "config.py"
    config.write_text(config.read_text() + "\n\ndef _late():\n    from mlsys.pipeline import runner  # an upward import\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "mlsys.models is not allowed to import mlsys.pipeline" in result.stdout, result.stdout
