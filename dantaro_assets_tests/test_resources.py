"""Which Postgres and Redis a process gets from the settings (``resources.py``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dantaro_assets.lib.embedded import stop_embedded
from dantaro_assets.lib.postgres import PostgresUnavailableError
from dantaro_assets.resources import snapshot_store
from dantaro_assets.settings import load_settings


@pytest.fixture
def empty_state() -> Iterator[Path]:
    """A state folder with no server running (outside pytest's mode-700 temp folder: as root the embedded Postgres
    runs as the user pgserver, so a wrongly started one would fail for that reason instead of showing itself)."""
    state = Path(tempfile.mkdtemp(prefix="dantaro-resources-test-"))
    yield state
    stop_embedded(state)
    shutil.rmtree(state, ignore_errors=True)


def test_the_apis_storage_connects_to_the_embedded_servers_but_never_starts_them(empty_state: Path):
    """`dantaro api` after `dantaro stop`: it must not bring the state folder's Postgres and Redis back (they would
    outlive it); the snapshot read fails as storage unavailable, which the API answers with 503."""
    store = snapshot_store(load_settings({"DANTARO_STATE_DIR": str(empty_state)}))
    with pytest.raises(PostgresUnavailableError, match="not running"):
        store.latest("market_status")
    assert stop_embedded(empty_state) == []  # nothing was started
    assert not (empty_state / "postgres").exists()
