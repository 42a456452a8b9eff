"""Test session set-up: every run gets its own Postgres schema, Redis key prefix and state folder.

The environment is set here, before settings are first read (they are read once).
Tests talk to the machine's real Postgres and Redis (``DANTARO_TEST_DATABASE_URL`` /
``DANTARO_TEST_REDIS_URL`` override them) and clean up what they create. On a machine with neither
running, the suite starts the project's embedded servers in its state folder, so the README's test
command works with nothing but Python and pip.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

RUN_TAG = uuid.uuid4().hex[:8]
STATE_DIR = tempfile.mkdtemp(prefix=f"dantaro-test-{RUN_TAG}-")



def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _server_url(variable: str, default: str, port: int, embedded) -> str:
    if os.environ.get(variable):
        return os.environ[variable]
    if _listening(port):
        return default
    return embedded(Path(STATE_DIR))


def _embedded_postgres(state_dir: Path) -> str:
    from dantaro_assets.lib.embedded import embedded_postgres_url

    return embedded_postgres_url(state_dir)


def _embedded_redis(state_dir: Path) -> str:
    from dantaro_assets.lib.embedded import embedded_redis_url

    return embedded_redis_url(state_dir)


os.environ["DATABASE_URL"] = _server_url("DANTARO_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test", 5432, _embedded_postgres)
os.environ["REDIS_URL"] = _server_url("DANTARO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", 6379, _embedded_redis)
os.environ["DANTARO_SCHEMA"] = f"dantaro_test_{RUN_TAG}"
os.environ["DANTARO_REDIS_PREFIX"] = f"dantaro_test_{RUN_TAG}"
os.environ["DANTARO_STATE_DIR"] = STATE_DIR
os.environ["UPBIT_BASE_URL"] = "http://127.0.0.1:9"  # never the live API; tests start a replay server
os.environ.pop("DAGSTER_HOME", None)

pytest_plugins = [
    "dantaro_assets_tests.fixtures.storage",
    "dantaro_assets_tests.fixtures.replay",
    "dantaro_assets_tests.fixtures.servers",
    "dantaro_assets_tests.fixtures.progress",
    "dantaro_assets_tests.fixtures.instance",
]


def pytest_sessionfinish(session, exitstatus) -> None:
    """Stop embedded servers the suite started (none when the machine's own servers were used), drop the state."""
    from dantaro_assets.lib.embedded import stop_embedded

    stop_embedded(Path(STATE_DIR))
    shutil.rmtree(STATE_DIR, ignore_errors=True)


def pytest_collection_modifyitems(items) -> None:
    """Modules with slow tests first, so their minutes overlap the fast modules on the other workers.

    pytest-xdist hands whole modules (``--dist loadfile``) to workers in collection order; a three-minute
    `dagster dev` test collected last would run alone at the end.
    """
    slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_modules)
