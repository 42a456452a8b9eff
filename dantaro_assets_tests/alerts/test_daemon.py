"""The webhook sensors under the real daemon: listed on the automation page, started there, a failed run delivered."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psycopg
import pytest

from dantaro_assets.alerts.webhooks import verify_signature
from dantaro_assets.partitions import daily_partitions
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.alerts.conftest import receivers
from dantaro_assets_tests.alerts.receiver import Receiver
from dantaro_assets_tests.harness import DagsterDev

LOCATION = {"repositoryName": "__repository__", "repositoryLocationName": "dantaro_assets.definitions"}
SENSORS = """query Sensors($repo: RepositorySelector!) { sensorsOrError(repositorySelector: $repo) {
    ... on Sensors { results { name sensorState { status ticks(limit: 1) { status } } } } } }"""
START = """mutation Start($sensor: SensorSelector!) { startSensor(sensorSelector: $sensor) {
    __typename ... on Sensor { sensorState { status } } } }"""
SECRET = "whsec-daemon-0123"


def _sensors(dev: DagsterDev) -> dict[str, dict]:
    return {s["name"]: s["sensorState"] for s in dev.query(SENSORS, {"repo": LOCATION})["sensorsOrError"]["results"]}


def _until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout} s")
        time.sleep(1)
    return value


@pytest.mark.slow(minutes=1)
def test_a_run_failing_under_the_daemon_reaches_the_receiver(tmp_path: Path, pg_url, settings, progress):
    schema = f"{settings.db_schema}_alerts_daemon"
    with Receiver().running() as receiver:
        env = {"WORKER_ENABLED": "false", "UPBIT_BASE_URL": "http://127.0.0.1:9", "UPBIT_MAX_RETRIES": "0", "DANTARO_RUN_RETRIES": "0",
               "DANTARO_SCHEMA": schema, "DANTARO_WEBHOOKS": json.dumps(receivers(receiver.url, ["run_failed"], secret=SECRET))}
        try:
            with DagsterDev(tmp_path / "dagster_home", env, settings=load_settings({**os.environ, **env})) as dev:
                progress(f"dagster dev answers at {dev.url}")
                sensors = _until(lambda: _sensors(dev), 120, "no sensors listed")
                webhook_sensors = {name: state for name, state in sensors.items() if name.startswith("webhook_")}
                assert len(webhook_sensors) == 8 and {s["status"] for s in webhook_sensors.values()} == {"STOPPED"}  # WORKER_ENABLED=false
                for name in ("webhook_run_failed_sensor", "webhook_delivery_sensor"):  # as an operator does on the automation page
                    started = dev.query(START, {"sensor": {**LOCATION, "sensorName": name}})["startSensor"]
                    assert started["sensorState"]["status"] == "RUNNING", started
                _until(lambda: _sensors(dev)["webhook_run_failed_sensor"]["ticks"], 120, "the run-failure sensor never ticked")
                progress("sensors started; launching a run that cannot reach Upbit")
                run_id = dev.launch("daily_candles_job", daily_partitions.get_partition_key_for_timestamp(time.time()))
                assert dev.wait(run_id, timeout=180) == "FAILURE"
                _until(lambda: receiver.requests, 180, "no webhook arrived")
                progress("the receiver got the run_failed webhook")
        finally:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    [request] = receiver.requests
    event = json.loads(request.body)
    assert (event["event"], event["id"], event["data"]["job_name"]) == ("run_failed", f"run_failed:{run_id}", "daily_candles_job")
    assert verify_signature(SECRET, request.headers["X-Dantaro-Signature"], request.body)
