"""Which Postgres and Redis a process gets from the settings (``resources.py``): decided once, for runs and every other
process alike."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dantaro_assets.lib.embedded import stop_embedded
from dantaro_assets.lib.postgres import PostgresUnavailableError
from dantaro_assets.resources import build_resources, process_storage, snapshot_store
from dantaro_assets.settings import load_settings


def test_configured_urls_win_over_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for variable, url in (("DATABASE_URL", "postgresql://u@db:5432/x"), ("REDIS_URL", "redis://cache:6379/1")):
        monkeypatch.setenv(variable, url)
    monkeypatch.setenv("DANTARO_STATE_DIR", str(tmp_path))
    settings = load_settings()
    assert process_storage(settings).urls() == ("postgresql://u@db:5432/x", "redis://cache:6379/1")
    assert not any(tmp_path.iterdir()), "nothing is started when URLs are configured"
    # runs get the same resources, the URL as the variable's name (never its value) in the definitions
    resources = build_resources(settings)
    assert resources["postgres"].url == dg.EnvVar("DATABASE_URL") and resources["redis"].url == dg.EnvVar("REDIS_URL")


@pytest.fixture
def empty_state(fresh_state: Path) -> Iterator[Path]:
    """A state folder with no server running (outside pytest's mode-700 temp folder: as root the embedded Postgres
    runs as the user pgserver, so a wrongly started one would fail for that reason instead of showing itself)."""
    yield fresh_state
    stop_embedded(fresh_state)


def test_the_apis_storage_connects_to_the_embedded_servers_but_never_starts_them(empty_state: Path):
    """`dantaro api` after `dantaro stop`: it must not bring the state folder's Postgres and Redis back (they would
    outlive it); the snapshot read fails as storage unavailable, which the API answers with 503."""
    store = snapshot_store(load_settings({"DANTARO_STATE_DIR": str(empty_state)}))
    with pytest.raises(PostgresUnavailableError, match="not running"):
        store.latest("market_status")
    assert stop_embedded(empty_state) == []  # nothing was started
    assert not (empty_state / "postgres").exists()


def test_a_process_s_storage_leaves_no_dagster_instance_for_the_garbage_collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                 caplog: pytest.LogCaptureFixture):
    """Resolving the resources outside a run opens an in-memory Dagster instance: it is closed before ``process_storage``
    returns. One left to a collection of reference cycles is closed in whatever order it finds the pieces, and
    SQLAlchemy logs "Cannot operate on a closed database" with a traceback into the process's log (whose formatting,
    inside another ``ast.parse``, raises CPython 3.11's "AST constructor recursion depth mismatch")."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db:5432/x")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("DANTARO_STATE_DIR", str(tmp_path))
    settings = load_settings()
    for _ in range(3):
        kept = [process_storage(settings)]
        kept.append(kept)  # held in a reference cycle, as by a frame or a traceback: only the collector frees it
        del kept
    with caplog.at_level(logging.ERROR, logger="sqlalchemy"):
        gc.collect()
    assert [record.getMessage() for record in caplog.records if record.name.startswith("sqlalchemy")] == []
