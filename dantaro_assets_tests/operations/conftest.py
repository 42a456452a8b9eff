from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dantaro_assets_tests.operations.daemon import project_instance


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A real instance configured by the project's dagster.yaml (SQLite under a temporary DAGSTER_HOME)."""
    with project_instance(tmp_path) as instance:
        yield instance
