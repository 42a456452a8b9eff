"""What a plain (non-editable) install gets: setuptools' build of the package, offline, holds the instance template, the
live page and the recommendations' calibration table."""

from __future__ import annotations

import shutil
import subprocess
import sys

import yaml

from dantaro_assets.api.app import STATIC
from dantaro_assets.definitions import defs
from dantaro_assets.processes.instance import TEMPLATE, render_instance_config
from dantaro_assets.recommendations.calibration import CALIBRATION_FILE
from dantaro_assets.settings import PROJECT_DIR, load_settings

# what a checkout holds beside its sources: git's, the state folder, builds, caches, a virtualenv
LOCAL_ONLY = (".git", ".dantaro", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", "site", ".venv")


def test_the_built_package_ships_the_dagster_yaml_template_and_the_live_page(tmp_path):
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    shipped = tmp_path / "lib" / "dantaro_assets" / "processes" / "dagster.yaml"
    assert shipped.read_bytes() == TEMPLATE.read_bytes()
    assert (tmp_path / "lib" / "dantaro_assets" / "recommendations" / "calibration.json").read_bytes() == CALIBRATION_FILE.read_bytes()
    page = tmp_path / "lib" / "dantaro_assets" / "api" / "static"
    for name in STATIC.rglob("*"):
        if name.is_file():
            assert (page / name.relative_to(STATIC)).read_bytes() == name.read_bytes(), name  # the live page works from an install
    assert not (tmp_path / "lib" / "dantaro_assets_tests").exists()
    rendered = render_instance_config(load_settings({"WORKER_MAX_WORKERS": "2"}), template=shipped)
    assert rendered["concurrency"]["runs"]["max_concurrent_runs"] == 2


def test_the_project_folders_dagster_yaml_is_the_packaged_template():
    top = PROJECT_DIR / "dagster.yaml"
    assert top.resolve() == TEMPLATE and yaml.safe_load(top.read_text()) == yaml.safe_load(TEMPLATE.read_text())


def test_a_plain_install_loads_the_definitions_without_the_checkout(tmp_path):
    """``pip install .`` (not ``-e``): the installed copy, not the source checkout, loads every asset and job.

    It installs a copy of the checkout: setuptools builds in the source tree and would leave ``build/`` in it."""
    site, source = tmp_path / "site", tmp_path / "source"
    shutil.copytree(PROJECT_DIR, source, ignore=shutil.ignore_patterns(*LOCAL_ONLY))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    assert (site / "dantaro_replay" / "server.py").is_file()
    assert (site / "dantaro_assets" / "processes" / "dagster.yaml").is_file()
    probe = (
        "import dantaro_assets, dantaro_assets.definitions as d; "
        "from dantaro_assets.recommendations.calibration import load_calibration; load_calibration().reach_atr(24, 1.5); "
        "print(dantaro_assets.__file__); "
        "print(' '.join(sorted(k.to_user_string() for k in d.defs.resolve_asset_graph().get_all_asset_keys())))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    where, keys = loaded.stdout.strip().splitlines()[-2:]
    assert where.startswith(str(site)), where
    expected = sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())
    assert keys.split() == expected and "market_status" in expected
