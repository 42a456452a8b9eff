"""The state folder's Dagster instance opened by several `dantaro` processes at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

OPEN_AND_READ = textwrap.dedent("""
    import dagster as dg
    from dantaro_assets.processes.instance import use_instance
    from dantaro_assets.settings import load_settings
    with dg.DagsterInstance.from_config(str(use_instance(load_settings()))) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
""")


def test_processes_opening_a_fresh_instance_at_once_all_start(tmp_path: Path):
    """`dantaro dev` and `dantaro api` started together on a fresh state folder: each opens the new instance, whose
    SQLite tables the first opener creates; unserialised, one of them died on "table job_ticks already exists"."""
    env = {key: value for key, value in os.environ.items() if key != "DAGSTER_HOME"} | {"DANTARO_STATE_DIR": str(tmp_path / "state")}
    processes = [subprocess.Popen([sys.executable, "-c", OPEN_AND_READ], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
    outcomes = [(process.wait(timeout=120), process.stderr.read()) for process in processes]
    assert [code for code, _ in outcomes] == [0] * 6, next(err for code, err in outcomes if code)[-1500:]
    assert (tmp_path / "state" / "dagster_home" / "dagster.yaml").read_text().startswith("# written by dantaro_assets.processes.instance")
