"""Test session set-up: every run gets its own Postgres schema, Redis key prefix and state folder.

The environment is set here, before settings are first read (they are read once).
Tests talk to the machine's real Postgres and Redis (``DANTARO_TEST_DATABASE_URL`` /
``DANTARO_TEST_REDIS_URL`` override them) and clean up what they create. On a machine with neither
running, the suite starts the project's embedded servers in its state folder, so the README's test
command works with nothing but Python and pip.
"""

from __future__ import annotations

import compileall
import os
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

RUN_TAG = uuid.uuid4().hex[:8]
STATE_DIR = tempfile.mkdtemp(prefix=f"dantaro-test-{RUN_TAG}-")
CHECKOUT = Path(__file__).resolve().parents[1]
# the default state folder (settings read from an empty environment): a test resolving its servers there would start
# an embedded Postgres in the checkout that outlives the suite
DEFAULT_STATE_DIR = CHECKOUT / ".dantaro"
DEFAULT_STATE_EXISTED = DEFAULT_STATE_DIR.exists()

# Under PYTHONDONTWRITEBYTECODE every process the suite starts (xdist workers, code servers, run workers, CLI
# subprocesses: about 200) compiled the project's modules from source again, 0.3 s each. The session compiles them
# once beside their sources (Python reads compiled files it did not write) and removes what it added at the end.
PROJECT_PACKAGES = [CHECKOUT / name for name in ("dantaro_assets", "dantaro_replay", "dantaro_assets_tests")]
COMPILED: list[Path] = []  # the __pycache__ folders this session adds
COMPILING = sys.dont_write_bytecode and "PYTEST_XDIST_WORKER" not in os.environ
if COMPILING:
    folders = [f for package in PROJECT_PACKAGES for f in (package, *package.rglob("*")) if f.is_dir() and f.name != "__pycache__"]
    COMPILED = [folder / "__pycache__" for folder in folders if not (folder / "__pycache__").exists()]
    for package in PROJECT_PACKAGES:
        compileall.compile_dir(package, quiet=1)


def pytest_configure(config: pytest.Config) -> None:
    """Under PYTHONDONTWRITEBYTECODE each xdist worker also rewrote the asserts of every test module again before
    collecting (2.8 of its 7.8 CPU-s; six workers at once on two CPUs). pytest reads a cached rewrite it did not
    write, so the controller writes them once, before the workers start, beside the compiled modules."""
    if not COMPILING:
        return
    try:  # pytest's own cache format: when its internals move, each worker rewrites as it did before
        from _pytest.assertion.rewrite import PYC_TAIL, _rewrite_test, _write_pyc_fp, get_cache_dir
    except ImportError:
        return
    tests = CHECKOUT / "dantaro_assets_tests"
    for path in tests.rglob("*.py"):
        if path.name == "conftest.py" or path.name.startswith("test_") or path.parent == tests / "fixtures":
            try:
                stat, code = _rewrite_test(path, config)
            except SyntaxError:  # the worker's collection reports it
                continue
            cache = get_cache_dir(path)
            cache.mkdir(exist_ok=True)
            with (cache / (path.name[:-3] + PYC_TAIL)).open("wb") as cached:
                _write_pyc_fp(cached, stat, code)


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
    for cache in COMPILED:
        shutil.rmtree(cache, ignore_errors=True)
    if not hasattr(session.config, "workerinput") and not DEFAULT_STATE_EXISTED and DEFAULT_STATE_DIR.exists():
        stop_embedded(DEFAULT_STATE_DIR)
        shutil.rmtree(DEFAULT_STATE_DIR, ignore_errors=True)
        print(f"\nA test started servers in the checkout's default state folder {DEFAULT_STATE_DIR} (settings read without "
              "conftest's environment, e.g. load_settings({})): stopped and removed; the session fails")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: three workers per CPU (at most 8), or ``PYTEST_XDIST_AUTO_NUM_WORKERS``.

    Most of a worker's time is waiting: on replay clocks, subprocesses starting, runs queued in a daemon. With
    two workers per CPU the suite used two thirds of two CPUs (703 CPU-s in 9:08); three per CPU filled more of
    those waits: 8:13, every test passing.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    return min(8, 3 * len(os.sched_getaffinity(0)))


def _minutes(item: pytest.Item) -> float:
    """What a test takes, for ordering: ``slow(minutes=...)`` when a test says, half a minute for other slow tests."""
    slow = item.get_closest_marker("slow")
    return 0.0 if slow is None else float(slow.kwargs.get("minutes", 0.5))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each module one xdist group (its tests run in order on one worker, sharing its module fixtures), except
    modules marked ``spread``, whose tests go to workers one by one; the longest groups first.

    pytest.ini asks for ``--dist loadgroup --no-loadscope-reorder``: workers take groups in this order, so the
    minutes of a `dagster dev` test overlap the fast modules instead of running alone at the end.
    """
    root = Path(__file__).parent
    group_of: dict[pytest.Item, str] = {}
    for item in items:
        marker = item.get_closest_marker("xdist_group")
        if marker is None and not item.get_closest_marker("spread"):
            item.add_marker(pytest.mark.xdist_group(str(item.path.relative_to(root))))
            marker = item.get_closest_marker("xdist_group")
        group_of[item] = item.nodeid if marker is None else str(marker.args[0] if marker.args else marker.kwargs.get("name"))
    minutes: dict[str, float] = {}
    for item in items:
        minutes[group_of[item]] = minutes.get(group_of[item], 0.0) + _minutes(item)
    items.sort(key=lambda item: -minutes[group_of[item]])
