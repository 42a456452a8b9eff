"""The event sensors on real stored outputs: rows written by the IO manager, a real failed run and check evaluation in a
real instance, the stream's health record in real Redis; their deliveries sent to a real local receiver."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest

from dantaro_assets.alerts.webhooks import clock
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.markets.seen import SeenStore, StreamHealth
from dantaro_assets.recommendations.assets import RECOMMENDATIONS
from dantaro_assets_tests.alerts.conftest import alert_definitions, deliveries, receivers, tick
from dantaro_assets_tests.alerts.receiver import Receiver
from dantaro_assets_tests.operations.daemon import FreshnessDaemon, daemon_workspace, freeze_time


@pytest.fixture
def now() -> datetime:
    """The test's own clock reading (the detectors look back ``CATCH_UP`` from the real time)."""
    return datetime.now(UTC).replace(second=0, microsecond=0)


def store(postgres, asset: dg.AssetsDefinition, frame: pd.DataFrame) -> None:
    """Write ``frame`` as the asset's run does (its metadata, through the IO manager), replacing only its own ticks."""
    metadata = asset.specs_by_key[asset.key].metadata
    window = dg.TimeWindow(frame["as_of"].min().to_pydatetime(), frame["as_of"].max().to_pydatetime() + timedelta(seconds=1))
    PostgresDataFrameIOManager(postgres=postgres).write(asset.key.path[-1], frame, dict(metadata), window)


def status_rows(now: datetime, *ticks: tuple[timedelta, str, float]) -> pd.DataFrame:
    rows = [{"as_of": pd.Timestamp(now - ago), "regime": regime, "score": score, "markets": 231, "breadth_1h": 0.22,
             "summary": f"{regime.replace('_', '-')} (score {score:.0f}/100): 22% of 231 markets up over the hour, median -0.80% in 1 h"}
            for ago, regime, score in ticks]
    return pd.DataFrame(rows)


def deliver(definitions, instance) -> None:
    tick(definitions, instance, "webhook_delivery_sensor")


def test_regime_change_is_told_once_for_each_snapshot_that_turns(postgres, redis_store, instance, now):
    with Receiver().running() as receiver:
        definitions = alert_definitions(postgres, redis_store, receivers(receiver.url, ["regime_change"], "slack", None))
        store(postgres, MARKET_STATUS.asset, status_rows(now,
            (timedelta(minutes=40), "risk_on", 64.0), (timedelta(minutes=30), "neutral", 52.0),  # older than the catch-up: history
            (timedelta(minutes=12), "neutral", 50.0), (timedelta(minutes=8), "risk_off", 34.0), (timedelta(minutes=4), "risk_off", 33.0)))
        first = tick(definitions, instance, "webhook_regime_change_sensor")
        assert first.cursor == (now - timedelta(minutes=4)).isoformat()
        assert tick(definitions, instance, "webhook_regime_change_sensor", first.cursor).skip_message == "nothing new"
        store(postgres, MARKET_STATUS.asset, status_rows(now, (timedelta(minutes=2), "risk_off", 38.0)))
        assert tick(definitions, instance, "webhook_regime_change_sensor", first.cursor).skip_message == "nothing new"
        store(postgres, MARKET_STATUS.asset, status_rows(now, (timedelta(minutes=1), "neutral", 45.0)))
        again = tick(definitions, instance, "webhook_regime_change_sensor", first.cursor)
        assert tick(definitions, instance, "webhook_regime_change_sensor").skip_message == "nothing new"  # found again: queued once
        deliver(definitions, instance)

    assert [row["event_id"] for row in deliveries(postgres)] == [
        f"regime_change:{(now - timedelta(minutes=8)):%Y-%m-%dT%H:%M:%SZ}", f"regime_change:{(now - timedelta(minutes=1)):%Y-%m-%dT%H:%M:%SZ}"]
    assert again.skip_message == f"1 delivery(ies) queued: regime_change:{(now - timedelta(minutes=1)):%Y-%m-%dT%H:%M:%SZ}"
    assert {request.body.decode() for request in receiver.requests} == {json.dumps(body, separators=(",", ":")) for body in [
        {"text": f"KRW market turned risk-off (score 34/100, was neutral at 50) at {clock(now - timedelta(minutes=8))}: "
                 "22% of 231 markets up over the hour, median -0.80% in 1 h"},
        {"text": f"KRW market turned neutral (score 45/100, was risk-off at 38) at {clock(now - timedelta(minutes=1))}: "
                 "22% of 231 markets up over the hour, median -0.80% in 1 h"},
    ]}  # in either order: deliveries go out side by side


def pick_rows(now: datetime, ago: timedelta, markets: list[str], scorer: str = "reversal",
              expires: dict[str, timedelta] | None = None) -> pd.DataFrame:
    as_of = pd.Timestamp(now - ago)
    rows = []
    for rank, market in enumerate(markets, start=1):
        row = {"as_of": as_of, "scorer": scorer, "rank": rank, "market": market, "score": 80.0 - rank, "entry": 812.0, "target": 845.0,
               "stop": 798.0, "reward_risk": 2.36, "tick_size": 1.0, "regime": "neutral", "caution": [], "reasons": {"rsi": 31.0},
               "summary": f"{market} {80 - rank} (neutral market): buy 812, target 845 (+4.06%), stop 798 (-1.72%), reward:risk 2.36"}
        if expires is not None:
            row["expires_at"] = pd.Timestamp(now + expires.get(market, timedelta(hours=4)))
        rows.append(row)
    return pd.DataFrame(rows)


def store_picks(postgres, *frames: pd.DataFrame) -> None:
    for frame in frames:
        store(postgres, RECOMMENDATIONS.asset, frame)


def test_a_market_entering_the_served_picks_is_a_new_top_pick_and_its_expiry_is_told_when_it_passes(postgres, redis_store, instance, now):
    expires = {"KRW-C": -timedelta(minutes=1), "KRW-B": -timedelta(minutes=2)}  # C's plan (and B's, never announced) ran out
    store_picks(postgres,
                pick_rows(now, timedelta(minutes=30), ["KRW-A", "KRW-B"], expires=expires),
                pick_rows(now, timedelta(minutes=12), ["KRW-A", "KRW-B"], expires=expires),
                pd.concat([pick_rows(now, timedelta(minutes=7), ["KRW-B", "KRW-C"], expires=expires),
                           pick_rows(now, timedelta(minutes=7), ["KRW-X"], scorer="v1", expires=expires)], ignore_index=True),  # a shadow scorer's: not served
                pick_rows(now, timedelta(minutes=2), ["KRW-B", "KRW-C", "KRW-D"], expires=expires))
    with Receiver().running() as receiver:
        definitions = alert_definitions(postgres, redis_store, receivers(receiver.url, ["new_top_pick", "picks_expired"]))
        picks = tick(definitions, instance, "webhook_new_top_pick_sensor")
        expired = tick(definitions, instance, "webhook_picks_expired_sensor")
        assert tick(definitions, instance, "webhook_new_top_pick_sensor", picks.cursor).skip_message == "nothing new"
        assert tick(definitions, instance, "webhook_picks_expired_sensor", expired.cursor).skip_message == "nothing new"
        store_picks(postgres, pick_rows(now, timedelta(minutes=1), ["KRW-C", "KRW-D", "KRW-A"], expires=expires))
        later = tick(definitions, instance, "webhook_new_top_pick_sensor", picks.cursor)
        deliver(definitions, instance)

    assert picks.cursor == (now - timedelta(minutes=2)).isoformat()
    assert later.skip_message == f"1 delivery(ies) queued: new_top_pick:{(now - timedelta(minutes=1)):%Y-%m-%dT%H:%M:%SZ}:KRW-A"
    received = sorted((json.loads(request.body) for request in receiver.requests), key=lambda event: (event["occurred_at"], event["event"]))
    assert [(event["event"], event["data"]["market"]) for event in received] == [  # a receiver may get them in any order
        ("new_top_pick", "KRW-C"), ("new_top_pick", "KRW-D"), ("new_top_pick", "KRW-A"), ("picks_expired", "KRW-C")]
    entered = received[0]
    made, expiry = now - timedelta(minutes=7), now - timedelta(minutes=1)
    assert entered["id"] == f"new_top_pick:{(now - timedelta(minutes=7)):%Y-%m-%dT%H:%M:%SZ}:KRW-C"
    assert entered["text"] == (f"New pick at {clock(now - timedelta(minutes=7))}, #2 of reversal: KRW-C 78 (neutral market): buy 812, "
                               f"target 845 (+4.06%), stop 798 (-1.72%), reward:risk 2.36; plan expires {clock(expiry, since=made)}")
    assert entered["data"] | {"caution": []} == entered["data"] and entered["data"]["entry"] == 812.0 and entered["data"]["rank"] == 2
    assert received[3]["text"].startswith(f"KRW-C pick of {clock(now - timedelta(minutes=7))} expired at {clock(expiry, since=made)}")


def test_without_an_expires_at_column_no_pick_expires_and_new_picks_still_arrive(postgres, redis_store, instance, now):
    store_picks(postgres, pick_rows(now, timedelta(minutes=12), ["KRW-A"]), pick_rows(now, timedelta(minutes=7), ["KRW-A", "KRW-B"]))
    definitions = alert_definitions(postgres, redis_store, receivers("http://127.0.0.1:9/", ["new_top_pick", "picks_expired"]))
    assert tick(definitions, instance, "webhook_picks_expired_sensor").skip_message == "nothing new"
    tick(definitions, instance, "webhook_new_top_pick_sensor")
    [row] = deliveries(postgres)
    assert row["event"] == "new_top_pick" and "expires" not in row["body"]


def test_nothing_is_read_or_queued_for_events_no_receiver_wants(postgres, redis_store, instance, now):
    store(postgres, MARKET_STATUS.asset, status_rows(now, (timedelta(minutes=8), "neutral", 50.0), (timedelta(minutes=4), "risk_off", 34.0)))
    definitions = alert_definitions(postgres, redis_store, receivers("http://127.0.0.1:9/", ["run_failed"]))
    result = tick(definitions, instance, "webhook_regime_change_sensor")
    assert result.skip_message == "no receiver in DANTARO_WEBHOOKS subscribes to regime_change" and result.cursor is None
    assert "webhook_deliveries" not in postgres.read_arrow(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", [postgres.db_schema]).column(0).to_pylist()


@dg.asset
def doomed() -> None:
    raise RuntimeError("Upbit went away mid-write (postgresql://dantaro:s3cret@db:5432/dantaro)")


@dg.asset(check_specs=[dg.AssetCheckSpec("positive_prices", asset="prices", blocking=False)])
def prices():
    yield dg.Output(None)
    yield dg.AssetCheckResult(check_name="positive_prices", passed=False, description="3 prices at or below zero")


def test_a_failed_run_is_told_with_its_error_redacted(postgres, redis_store, instance):
    with Receiver().running() as receiver:
        definitions = alert_definitions(postgres, redis_store, receivers(receiver.url, ["run_failed"]), assets=[doomed])
        start = tick(definitions, instance, "webhook_run_failed_sensor")  # Dagster's run-failure sensor starts after the newest event
        result = dg.materialize([doomed], instance=instance, raise_on_error=False)
        assert not result.success
        tick(definitions, instance, "webhook_run_failed_sensor", start.cursor)
        deliver(definitions, instance)
    [request] = receiver.requests
    event = json.loads(request.body)
    assert event["event"] == "run_failed" and event["id"] == f"run_failed:{result.run_id}"
    assert event["text"].startswith(f"Run of {result.dagster_run.job_name} failed at ")
    assert "Upbit went away mid-write (postgresql://dantaro:***@db:5432/dantaro)" in event["text"]
    assert event["data"]["run_id"] == result.run_id and "s3cret" not in request.body.decode()


def test_a_failed_check_evaluation_is_told(postgres, redis_store, instance):
    with Receiver().running() as receiver:
        definitions = alert_definitions(postgres, redis_store, receivers(receiver.url, ["check_failed"], "discord"), assets=[prices])
        assert tick(definitions, instance, "webhook_check_failed_sensor").skip_message == "nothing new"
        result = dg.materialize([prices], instance=instance)
        [evaluation] = result.get_asset_check_evaluations()
        assert not evaluation.passed
        found = tick(definitions, instance, "webhook_check_failed_sensor")
        assert tick(definitions, instance, "webhook_check_failed_sensor", found.cursor).skip_message == "nothing new"
        deliver(definitions, instance)
    [request] = receiver.requests
    content = json.loads(request.body)["content"]
    assert content.startswith("Check positive_prices on prices failed at ")
    assert content.endswith(f": 3 prices at or below zero (not blocking; run {result.run_id[:8]})")


def test_the_stream_going_down_and_coming_back_is_told_once_each(postgres, redis_store, instance):
    seen = SeenStore(postgres)
    definitions = alert_definitions(postgres, redis_store, receivers("http://127.0.0.1:9/", ["stream_down", "stream_up"]))

    def beat(heartbeat_ago: float) -> None:
        now = datetime.now(UTC).timestamp()
        seen.publish(StreamHealth(heartbeat=now - heartbeat_ago, server_now=now - heartbeat_ago, covered_through=now - heartbeat_ago - 5,
                                  running=True, figures={"reconnects": 2, "markets": 231}))

    never = tick(definitions, instance, "webhook_stream_sensor")
    assert (never.cursor, never.skip_message) == (None, "nothing new")  # a stream that never ran (dantaro dev --no-stream)
    beat(0)
    cursor = tick(definitions, instance, "webhook_stream_sensor").cursor  # the first look only records the state
    beat(120)
    down = tick(definitions, instance, "webhook_stream_sensor", cursor)
    still = tick(definitions, instance, "webhook_stream_sensor", down.cursor)
    beat(0)
    up = tick(definitions, instance, "webhook_stream_sensor", still.cursor)
    rows = deliveries(postgres)
    assert [row["event"] for row in rows] == ["stream_down", "stream_up"] and still.skip_message == "nothing new"
    down_text = json.loads(rows[0]["body"])["text"]
    assert down_text.startswith("Live candle stream down at ") and ": stream down: no heartbeat for 120 s;" in down_text
    assert json.loads(rows[1]["body"])["text"].startswith("Live candle stream back at ")
    assert rows[1]["event_id"] == "stream_up:" + rows[0]["event_id"] and json.loads(up.cursor)["up"] is True


@pytest.mark.parametrize("enabled", [True, False])
def test_the_sensors_are_on_the_automation_page_running_unless_the_worker_is_disabled(enabled):
    from dantaro_assets.alerts.definitions import build_defs
    from dantaro_assets.settings import load_settings

    settings = load_settings({"WORKER_ENABLED": str(enabled).lower(),
                              "DANTARO_WEBHOOKS": json.dumps(receivers("https://example.com/hook", ["run_failed"]))})
    definitions = build_defs(settings)
    repository = definitions.get_repository_def()
    names = {sensor.name for sensor in repository.sensor_defs}
    assert names == {"webhook_regime_change_sensor", "webhook_new_top_pick_sensor", "webhook_picks_expired_sensor",
                     "webhook_check_failed_sensor", "webhook_freshness_failed_sensor", "webhook_stream_sensor",
                     "webhook_run_failed_sensor", "webhook_delivery_sensor"}
    expected = dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED
    assert {sensor.default_status for sensor in repository.sensor_defs} == {expected}
    assert isinstance(definitions.resources["webhooks"].config, dg.EnvVar)  # the snapshot names the variable, never a URL or secret


def test_an_asset_failing_its_freshness_policy_is_told(postgres, redis_store, instance):
    from dantaro_assets_tests.alerts.freshness_defs import ticker

    definitions = alert_definitions(postgres, redis_store, receivers("http://127.0.0.1:9/", ["freshness_failed"]), assets=[ticker])
    dg.materialize([ticker], instance=instance)
    materialised = datetime.fromtimestamp(instance.get_latest_materialization_event(ticker.key).timestamp, UTC)
    with daemon_workspace(instance, "dantaro_assets_tests.alerts.freshness_defs") as workspace:
        with freeze_time(materialised + timedelta(seconds=30)):
            list(FreshnessDaemon().run_iteration(workspace))
            fresh = tick(definitions, instance, "webhook_freshness_failed_sensor")
        with freeze_time(materialised + timedelta(minutes=3)):
            list(FreshnessDaemon().run_iteration(workspace))  # the daemon records the asset failing its policy
            stale = tick(definitions, instance, "webhook_freshness_failed_sensor", fresh.cursor)
            again = tick(definitions, instance, "webhook_freshness_failed_sensor", stale.cursor)
    assert (fresh.skip_message, again.skip_message) == ("nothing new", "nothing new")
    [row] = deliveries(postgres)
    event = json.loads(row["body"])
    assert event["event"] == "freshness_failed" and event["data"]["asset"] == "ticker"
    assert event["text"] == (f"ticker is stale: last updated {clock(materialised)}, failing its freshness policy since "
                             f"{clock(materialised + timedelta(minutes=3))}")
