"""Every benchmark starts as docs/benchmarks.md shows it: ``python bench/<name>.py`` with nothing on PYTHONPATH.

pip installs the package, not the tests or bench/, so a script that imports either must find the checkout itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
# the scripts that import what only the checkout holds (the tests' harness, another bench module)
SCRIPTS = sorted(path for path in [*(CHECKOUT / "bench").glob("*.py"), CHECKOUT / "deploy" / "screenshots.py"]
                 if 'if __name__ == "__main__"' in (text := path.read_text()) and ("dantaro_assets_tests" in text or "from bench." in text))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_bench_script_imports_from_any_folder_without_pythonpath(script: Path, tmp_path: Path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(script), "--help"], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:"), done.stdout[:500]
