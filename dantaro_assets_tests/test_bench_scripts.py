"""Every benchmark starts as docs/benchmarks.md shows it: ``python bench/<name>.py`` with nothing on PYTHONPATH.

pip installs the package, not the tests or bench/, so a script that imports either must find the checkout itself.
"""

from __future__ import annotations

import json
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


@pytest.mark.slow
def test_the_analysis_bench_runs_its_loops_and_finds_them_equal_to_the_vectorised_analyses(pg_url, settings, tmp_path: Path):
    """``bench/analysis.py`` as docs/benchmarks.md shows it, on 20 markets: every asset's read, compute, write and push,
    and the per-market loop checked equal to the vectorised result (the recommendations with their books)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(CHECKOUT / "bench" / "analysis.py"), "--markets", "20", "--repeat", "1", "--url", pg_url,
                           "--redis", settings.redis_url], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["assets"]) == {"market_status", "support_levels", "recommendations"}
    assert "orderbook_top" in result["assets"]["recommendations"]["read_last_run"]
    assert all(asset["rows_written"] > 0 for asset in result["assets"].values())
