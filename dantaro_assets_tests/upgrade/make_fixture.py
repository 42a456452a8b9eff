"""Build the upgrade fixtures: the project schema as an earlier release of main left it.

    python -m dantaro_assets_tests.upgrade.make_fixture 66c7cb9 1088aa0 [--out DIR]

For each commit its code is checked out with ``git archive`` into a temporary folder and run there
(``PYTHONPATH``, so nothing of this checkout is imported) against a private Postgres and Redis and the
simulated replay server: it materialises a few partitions of every asset it defines (``PLAN``). The
schema is then dumped with ``pg_dump -Fc`` (what ``dantaro backup`` writes) to ``fixtures/<commit>.dump``,
beside ``fixtures/<commit>.json``: the commit, and each table's key, row count and per-column checksums
(``releases.table_checksums``). Only this script needs the git history; the upgrade test reads the
committed fixtures. Simulated data only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dantaro_assets.lib.backup import pg_tool
from dantaro_assets_tests.fixtures.servers import PrivatePostgres, PrivateRedis
from dantaro_assets_tests.upgrade.releases import FIXTURES, table_checksums
from dantaro_replay.process import start_replay_server

REPOSITORY = Path(__file__).resolve().parents[2]
SCHEMA = "dantaro"
MARKETS = 8
# (assets, first partition, last partition): the lookbacks of every analysis, then two hours of each
# analysis and one of outcomes. Assets a release does not define are skipped.
PLAN = [
    (["upbit_markets"], "2025-09-05", "2025-09-20"),
    (["upbit_instruments"], "2025-09-19", "2025-09-20"),
    (["candles_1d"], "2025-09-05", "2025-09-20"),
    (["candles_1h"], "2025-09-05", "2025-09-20"),
    (["candles_1m"], "2025-09-19-08:00", "2025-09-20-12:00"),
    (["market_status", "market_status_redis"], "2025-09-20-10:00", "2025-09-20-10:00"),
    (["market_status", "market_status_redis"], "2025-09-20-11:00", "2025-09-20-11:00"),
    (["support_levels", "support_levels_redis"], "2025-09-20-10:00", "2025-09-20-10:00"),
    (["support_levels", "support_levels_redis"], "2025-09-20-11:00", "2025-09-20-11:00"),
    (["recommendations", "recommendations_redis"], "2025-09-20-10:00", "2025-09-20-10:00"),
    (["recommendations", "recommendations_redis"], "2025-09-20-11:00", "2025-09-20-11:00"),
    (["recommendation_outcomes"], "2025-09-20-10:00", "2025-09-20-10:00"),
]

# Runs inside the old release's code: only public Dagster APIs and the release's own `defs`.
DRIVER = """
import json, sys
import dagster as dg
from dantaro_assets.definitions import defs

assets = list(defs.assets)
defined = {key.to_user_string() for a in assets if isinstance(a, dg.AssetsDefinition) for key in a.keys}
for names, first, last in json.loads(sys.argv[1]):
    selection = [name for name in names if name in defined]
    if not selection:
        print(json.dumps({"assets": names, "skipped": "not defined in this release"}), flush=True)
        continue
    tags = None if first == last else {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    result = dg.materialize(assets, selection=selection, partition_key=first if first == last else None, tags=tags,
                            resources=defs.resources, raise_on_error=False)
    print(json.dumps({"assets": selection, "first": first, "last": last, "success": result.success}), flush=True)
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                print(event.step_failure_data.error.to_string(), file=sys.stderr)
        sys.exit(1)
"""


def build(commit: str, workdir: Path, out: Path) -> dict:
    """Run ``commit``'s code into a fresh database; dump its schema; return the manifest."""
    source = workdir / "source"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    subject = subprocess.run(["git", "-C", str(REPOSITORY), "log", "-1", "--format=%cs %s", commit],
                             check=True, capture_output=True, text=True).stdout.strip()
    postgres, redis = PrivatePostgres(workdir / "pg"), PrivateRedis(workdir / "redis")
    (workdir / "pg").mkdir()
    (workdir / "redis").mkdir()
    postgres.init()
    postgres.start()
    redis.start()
    replay = start_replay_server("--simulated", str(MARKETS), "--seed", "7")
    try:
        env = {
            "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(source),
            "DATABASE_URL": postgres.url, "REDIS_URL": redis.url, "UPBIT_BASE_URL": replay.url,
            "DANTARO_SCHEMA": SCHEMA, "DANTARO_REDIS_PREFIX": "fixture", "DANTARO_STATE_DIR": str(workdir / "state"),
            "DAGSTER_HOME": str(workdir / "dagster_home"), "WORKER_LOG_LEVEL": "WARNING",
        }
        (workdir / "dagster_home").mkdir()
        run = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(PLAN)], check=False, cwd=source, env=env, text=True,
                             capture_output=True)
        print(run.stdout, end="")
        if run.returncode:
            raise RuntimeError(f"{commit}: materialisation failed:\n{run.stderr[-6000:]}")
        dump = out / f"{commit}.dump"
        subprocess.run([str(pg_tool("pg_dump")), "--format=custom", "--compress=9", "--no-owner", "--no-privileges",
                        f"--schema={SCHEMA}", f"--file={dump}", postgres.url], check=True)
        return {
            "commit": commit,
            "release": subject,
            "schema": SCHEMA,
            "markets": MARKETS,
            "plan": PLAN,
            "tables": table_checksums(postgres.url, SCHEMA),
        }
    finally:
        replay.stop()
        redis.stop()
        postgres.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commits", nargs="+", help="commits of main to build fixtures from")
    parser.add_argument("--out", type=Path, default=FIXTURES, help="where the fixtures go (default: the committed ones)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for commit in args.commits:
        short = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "--short=7", commit],
                               check=True, capture_output=True, text=True).stdout.strip()
        workdir = Path(tempfile.mkdtemp(prefix=f"dantaro-fixture-{short}-"))
        os.chmod(workdir, 0o755)  # the private Postgres may run as another user
        try:
            started = time.monotonic()
            manifest = build(short, workdir, args.out)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        (args.out / f"{short}.json").write_text(json.dumps(manifest, indent=1) + "\n")
        rows = {table: info["rows"] for table, info in manifest["tables"].items()}
        dump = args.out / f"{short}.dump"
        print(f"{short}: {dump} ({dump.stat().st_size:,} bytes) in {time.monotonic() - started:.0f} s, {sum(rows.values()):,} rows {rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
