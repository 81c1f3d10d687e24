"""The tutorials run as tests, so they stay true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TVM_MPQ_NO_PROGRESS": "1", "TVM_MPQ_TUTORIAL_OUT": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.rstrip().endswith("done")
