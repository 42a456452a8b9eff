from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dantaro_assets.operations.instance import write_instance_config


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A real instance configured by the project's dagster.yaml (SQLite under a temporary DAGSTER_HOME)."""
    write_instance_config(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance
