"""No password of DATABASE_URL / REDIS_URL shows: in the CLI, its errors, the dev banner, resource errors or the UI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from dantaro_assets.lib.postgres import PostgresResource, PostgresUnavailableError
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.redaction import redact_text, redact_url, redact_webhook_url
from dantaro_assets_tests.harness import free_port

PROJECT_DIR = Path(__file__).resolve().parents[1]
SECRET = "s3cret"
SECRET_URLS = {"DATABASE_URL": f"postgresql://user:{SECRET}@127.0.0.1:5432/test", "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:6379/0"}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The process environment with the secret URLs, this worktree first on the path, a private state folder."""
    return {
        **os.environ, **SECRET_URLS, "PYTHONPATH": str(PROJECT_DIR), "DANTARO_STATE_DIR": str(tmp_path / "state"),
        "DAGSTER_HOME": str(tmp_path / "home"), "WORKER_ENABLED": "false", "PYTHONUNBUFFERED": "1", **extra,
    }


def _cli(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dantaro_assets.cli", *args], env=_env(tmp_path, **extra),
                          capture_output=True, text=True, cwd=PROJECT_DIR, timeout=120, check=False)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:s3cret@127.0.0.1:5432/test", "postgresql://user:***@127.0.0.1:5432/test"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("postgresql://user:s3c@ret/x@db:5432/test", "postgresql://user:***@db:5432/test"),  # '@' and '/' inside the password
        ("postgresql://db/test?sslmode=require&password=s3cret", "postgresql://db/test?sslmode=require&password=***"),
        # libpq's sslpassword (the client key's passphrase) is a secret too
        ("postgresql://db/test?sslmode=verify-full&sslpassword=k3y&user=u", "postgresql://db/test?sslmode=verify-full&sslpassword=***&user=u"),
        ("user:s3cret@db:5432/test", "user:***@db:5432/test"),  # no scheme: still hidden
        ("postgresql://user@db/test", "postgresql://user@db/test"),  # nothing to hide
        ("postgresql://postgres:@/postgres?host=/state/pg", "postgresql://postgres:@/postgres?host=/state/pg"),  # embedded: empty password
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
    ],
)
def test_redact_url_hides_the_password_and_keeps_the_rest(url, shown):
    assert redact_url(url) == shown


def test_redact_text_hides_every_url_in_a_message():
    text = "could not reach 'postgresql://user:s3cret@db:5432/test' nor redis://:s3cret@cache:6379/0."
    assert redact_text(text) == "could not reach 'postgresql://user:***@db:5432/test' nor redis://:***@cache:6379/0."


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T00000000/B00000000/abcdEFGHijklMNOPqrstUVWX", "https://hooks.slack.com/services/T00000000/B00000000/***"),
        ("https://discord.com/api/webhooks/123456789012345678/Ab3_cD-ef", "https://discord.com/api/webhooks/***/Ab3_cD-ef"),
        ("https://discord.com/api/webhooks/1234/aBcDeFgHiJkLmNoPqRsTuVwXyZ", "https://discord.com/api/webhooks/1234/***"),
        ("http://bot:s3cret@127.0.0.1:8080/dantaro-webhook-receiver?key=s3cret&v=1", "http://bot:***@127.0.0.1:8080/dantaro-webhook-receiver?key=***&v=***"),
        ("http://127.0.0.1:8080/hooks/dantaro", "http://127.0.0.1:8080/hooks/dantaro"),  # nothing to hide
    ],
)
def test_redact_webhook_url_hides_tokens_in_the_path_and_the_query(url, shown):
    assert redact_webhook_url(url) == shown


WEBHOOKS = json.dumps([{"url": f"http://bot:{SECRET}@127.0.0.1:9/services/T0/B0/aBcDeFgHiJkLmNoPqRsTuVwX", "events": ["run_failed"],
                        "format": "slack", "secret": f"whsec-{SECRET}"}])


def test_settings_command_shows_urls_redacted(tmp_path):
    result = _cli(tmp_path, "settings", DANTARO_WEBHOOKS=WEBHOOKS)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr and "aBcDeFgHiJkLmNoPqRsTuVwX" not in result.stdout
    assert "| `DATABASE_URL` | `postgresql://user:***@127.0.0.1:5432/test` |" in result.stdout
    assert "| `REDIS_URL` | `redis://:***@127.0.0.1:6379/0` |" in result.stdout
    assert ('| `DANTARO_WEBHOOKS` | `[{"url": "http://bot:***@127.0.0.1:9/services/T0/B0/***", "events": ["run_failed"], '
            '"format": "slack", "secret": "***"}]` |') in result.stdout


def test_a_bad_webhooks_setting_names_what_is_wrong_without_its_value(tmp_path):
    bad = WEBHOOKS.replace('"slack"', '"teams"').replace('"run_failed"', '"run_crashed"')
    result = _cli(tmp_path, "settings", DANTARO_WEBHOOKS=bad)
    assert result.returncode == 2 and SECRET not in result.stdout + result.stderr
    assert "DANTARO_WEBHOOKS (value not shown: it holds secrets): receiver 1, events: unknown event(s) 'run_crashed'" in result.stderr
    assert "receiver 1, format: Input should be 'json', 'slack' or 'discord'" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("DATABASE_URL", "postgresql//user:s3cret@127.0.0.1:5432/test", "must be a URL starting with postgresql://"),
        ("DATABASE_URL", "postgresql://user:s3cret@127.0.0.1:54x32/test", "port that is not a number"),
        ("REDIS_URL", "localhost://:s3cret@127.0.0.1:6379/0", "must be a URL starting with redis://"),
    ],
)
def test_a_settings_error_on_a_malformed_url_hides_the_password(tmp_path, variable, value, reason):
    result = _cli(tmp_path, "settings", **{variable: value})
    assert result.returncode == 2
    assert SECRET not in result.stdout + result.stderr
    assert f"{variable}={redact_url(value)!r}" in result.stderr and reason in result.stderr


def test_settings_repr_hides_the_password():
    from dantaro_assets.settings import load_settings

    assert SECRET not in repr(load_settings(SECRET_URLS))
    assert SECRET not in repr(load_settings({"DANTARO_WEBHOOKS": WEBHOOKS}))


def test_postgres_resource_errors_name_the_server_without_its_password():
    port = free_port()  # nothing listens there
    resource = PostgresResource(url=f"postgresql://user:{SECRET}@127.0.0.1:{port}/test")
    with pytest.raises(PostgresUnavailableError) as excinfo:
        resource.read_frame("SELECT 1")
    assert SECRET not in str(excinfo.value) and excinfo.value.__cause__ is None
    assert f"postgresql://user:***@127.0.0.1:{port}/test" in str(excinfo.value)


def test_redis_resource_errors_carry_no_password():
    port = free_port()
    with pytest.raises(redis.ConnectionError) as excinfo:
        RedisResource(url=f"redis://:{SECRET}@127.0.0.1:{port}/0", prefix="p").client().get("p:market_status:latest")
    assert SECRET not in str(excinfo.value) and str(port) in str(excinfo.value)


@pytest.mark.slow
def test_dev_banner_shows_urls_redacted(tmp_path):
    """`dantaro dev` for real up to its banner, then stopped (or stopping by itself: the Postgres URL's user does not
    exist, so the migration at start fails, its error redacted too)."""
    (tmp_path / "home").mkdir()  # an operator's DAGSTER_HOME exists (a missing one is refused: test_cli.py)
    dev = subprocess.Popen([sys.executable, "-m", "dantaro_assets.cli", "dev", "--port", str(free_port())],
                           env=_env(tmp_path, UPBIT_BASE_URL="http://127.0.0.1:9"), cwd=PROJECT_DIR,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = ""
        deadline = time.monotonic() + 120
        while "DAGSTER_HOME" not in banner and time.monotonic() < deadline and dev.poll() is None:
            banner += dev.stdout.readline()
    finally:
        dev.send_signal(signal.SIGTERM)  # dantaro dev stops its `dagster dev` on SIGTERM
        rest, _ = dev.communicate(timeout=90)
    assert "dantaro dev: Postgres postgresql://user:***@127.0.0.1:5432/test, Redis redis://:***@127.0.0.1:6379/0" in banner
    assert SECRET not in banner + rest


RESOURCES_QUERY = """
query Resources($selector: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $selector) {
    __typename
    ... on ResourceDetailsList {
      results {
        name
        configuredValues { key value type }
        nestedResources { name resource { name configuredValues { key value type } } }
      }
    }
  }
  utilizedEnvVarsOrError(repositorySelector: $selector) {
    ... on EnvVarWithConsumersList { results { envVarName } }
  }
}
"""


@pytest.mark.slow
def test_ui_resources_page_shows_variable_names_not_urls(tmp_path):
    """A real dagster-webserver loads the code location; its GraphQL (what the Resources page shows) holds no password."""
    port = free_port()
    (tmp_path / "home").mkdir()
    log = (tmp_path / "webserver.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", str(PROJECT_DIR / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        env=_env(tmp_path), cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        selector = {"repositoryLocationName": "dantaro_assets.definitions", "repositoryName": "__repository__"}
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "webserver.log").read_text()[-3000:]
            try:
                query = {"query": RESOURCES_QUERY, "variables": {"selector": selector}}
                answer = httpx.post(f"http://127.0.0.1:{port}/graphql", json=query, timeout=30).json()["data"]
                if answer["allTopLevelResourceDetailsOrError"]["__typename"] == "ResourceDetailsList":
                    break
            except (httpx.HTTPError, KeyError, TypeError, json.JSONDecodeError):
                pass
            time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    assert SECRET not in json.dumps(answer)
    resources = {r["name"]: r for r in answer["allTopLevelResourceDetailsOrError"]["results"]}
    assert {"key": "url", "value": "DATABASE_URL", "type": "ENV_VAR"} in resources["postgres"]["configuredValues"]
    assert {"key": "url", "value": "REDIS_URL", "type": "ENV_VAR"} in resources["redis"]["configuredValues"]
    nested = {n["name"]: n["resource"] for n in resources["io_manager"]["nestedResources"]}
    assert {"key": "url", "value": "DATABASE_URL", "type": "ENV_VAR"} in nested["postgres"]["configuredValues"]
    assert {"DATABASE_URL", "REDIS_URL"} <= {v["envVarName"] for v in answer["utilizedEnvVarsOrError"]["results"]}
