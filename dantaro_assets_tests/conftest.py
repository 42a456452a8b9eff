"""Test session set-up: every run gets its own Postgres schema, Redis key prefix and state folder.

The environment is set here, before any ``dantaro_assets`` import, because settings are read once.
Tests talk to the machine's real Postgres and Redis (``DANTARO_TEST_DATABASE_URL`` /
``DANTARO_TEST_REDIS_URL`` override them) and clean up what they create.
"""

from __future__ import annotations

import os
import tempfile
import uuid

RUN_TAG = uuid.uuid4().hex[:8]
STATE_DIR = tempfile.mkdtemp(prefix=f"dantaro-test-{RUN_TAG}-")

os.environ["DATABASE_URL"] = os.environ.get("DANTARO_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
os.environ["REDIS_URL"] = os.environ.get("DANTARO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ["DANTARO_SCHEMA"] = f"dantaro_test_{RUN_TAG}"
os.environ["DANTARO_REDIS_PREFIX"] = f"dantaro_test_{RUN_TAG}"
os.environ["DANTARO_STATE_DIR"] = STATE_DIR
os.environ["UPBIT_BASE_URL"] = "http://127.0.0.1:9"  # never the live API; tests start a replay server
os.environ.pop("DAGSTER_HOME", None)

pytest_plugins = [
    "dantaro_assets_tests.fixtures.storage",
    "dantaro_assets_tests.fixtures.replay",
]
