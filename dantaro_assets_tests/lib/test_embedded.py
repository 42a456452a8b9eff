"""Embedded Postgres and Redis from nothing: started by racing processes, outliving them, shared by all."""

import json
import subprocess
import sys
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import pytest
import redis

from dantaro_assets.lib.embedded import embedded_postgres_url, embedded_redis_url, stop_embedded

_START = """
import json, sys
from pathlib import Path
from dantaro_assets.lib.embedded import embedded_postgres_url, embedded_redis_url
state = Path(sys.argv[1])
print(json.dumps([embedded_postgres_url(state), embedded_redis_url(state)]))
"""


def _server_pids(pg: str, rd: str) -> tuple[int, int]:
    """The postmaster and redis-server process ids behind the two URLs."""
    with adbc.connect(pg) as conn, conn.cursor() as cur:
        cur.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        (data_directory,) = cur.fetchone()
    postmaster = int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
    with redis.Redis.from_url(rd) as client:
        return postmaster, int(client.info("server")["process_id"])


@pytest.mark.slow
def test_servers_start_from_nothing_once_and_outlive_their_starters(fresh_state: Path):
    state = fresh_state / "state"
    racers = [subprocess.Popen([sys.executable, "-c", _START, str(state)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outputs = [json.loads(racer.communicate(timeout=120)[0]) for racer in racers]
        assert all(racer.returncode == 0 for racer in racers)
        assert outputs[0] == outputs[1], "both racing processes must get the same servers"
        pg, rd = outputs[0]
        assert (state / "postgres" / "PG_VERSION").exists() and (state / "redis" / "redis.pid").exists()

        # Both starters have exited; the servers still answer and this process reuses them.
        pids = _server_pids(pg, rd)
        assert (embedded_postgres_url(state), embedded_redis_url(state)) == (pg, rd)
        assert _server_pids(pg, rd) == pids
        with redis.Redis.from_url(rd) as client:
            client.set("k", "v")
            assert client.get("k") == b"v"
    finally:
        stop_embedded(state)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(rd, socket_connect_timeout=1).ping()
    with pytest.raises(adbc.OperationalError):
        adbc.connect(pg)

