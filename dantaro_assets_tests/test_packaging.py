"""What a plain (non-editable) install gets: setuptools' build of the package, offline, holds the instance template."""

from __future__ import annotations

import subprocess
import sys

import yaml

from dantaro_assets.operations.instance import TEMPLATE, render_instance_config
from dantaro_assets.settings import PROJECT_DIR, load_settings


def test_the_built_package_ships_the_dagster_yaml_template(tmp_path):
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    shipped = tmp_path / "lib" / "dantaro_assets" / "operations" / "dagster.yaml"
    assert shipped.read_bytes() == TEMPLATE.read_bytes()
    assert not (tmp_path / "lib" / "dantaro_assets_tests").exists()
    rendered = render_instance_config(load_settings({"WORKER_MAX_WORKERS": "2"}), template=shipped)
    assert rendered["concurrency"]["runs"]["max_concurrent_runs"] == 2


def test_the_project_folders_dagster_yaml_is_the_packaged_template():
    top = PROJECT_DIR / "dagster.yaml"
    assert top.resolve() == TEMPLATE and yaml.safe_load(top.read_text()) == yaml.safe_load(TEMPLATE.read_text())
