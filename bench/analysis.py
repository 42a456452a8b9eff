"""Benchmark: one snapshot tick of each analysis asset for 250 markets, split into read, compute, write, push.

Candles of the replay's simulated market (dantaro_replay/simulated.py: 250 KRW markets,
BTC-correlated, no-trade gaps) are written through the Postgres IO manager into a temporary schema
of the machine's Postgres, as the candle assets would store them. For each asset, one tick is timed:

- read: every input loaded through the IO manager over the asset's own partition mappings (one
  range query per input);
- compute: ``AnalysisInputs.assemble`` (gap filling, forming bars, turnover) plus the asset's analysis at that tick;
- write: the tick's rows written to the asset's table (delete + COPY in one transaction);
  (the Dagster contexts are built beforehand: building one outside a run creates an ephemeral
  instance, ~0.1 s, which a real run does not pay per input)
- push: the rows pushed to Redis as the latest snapshot (per market too for support_levels).

In the same run the compute is compared with a per-market pandas loop over the same inputs (the
obvious alternative), whose results are checked equal to the vectorised ones. Add an asset by
appending an ``AssetBench`` to ``BENCHES``. Median of ``--repeat`` runs.

    python bench/analysis.py [--url postgresql://postgres@127.0.0.1:5432/test] [--redis redis://127.0.0.1:6379/0]
                             [--markets 250] [--repeat 3]
"""

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: dantaro_assets_tests is not pip-installed

from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib.analysis_inputs import AnalysisInputs, Lookback
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, WriteMode
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.market_status import analysis as status_analysis
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.partitions import daily_partitions, hourly_partitions
from dantaro_assets.recommendations import analysis as recs_analysis
from dantaro_assets.recommendations.assets import RECOMMENDATIONS
from dantaro_assets.settings import load_settings
from dantaro_assets.support_levels import analysis as levels_analysis
from dantaro_assets.support_levels.assets import SUPPORT_LEVELS
from dantaro_assets_tests.lib.candle_data import simulated_books, simulated_upstream

HOUR = pd.Timestamp("2025-10-08 10:00", tz="UTC")
RECOMMENDATIONS_TICK = HOUR + pd.Timedelta(minutes=55)
PARTITION = HOUR.strftime("%Y-%m-%d-%H:%M")
CANDLE_METADATA = {"partition_expr": "candle_start", "primary_key": ["market", "candle_start"], "write_mode": WriteMode.MERGE}
UPSTREAM = {
    "candles_1m": (hourly_partitions, CANDLE_METADATA),
    "candles_1h": (daily_partitions, CANDLE_METADATA),
    "candles_1d": (daily_partitions, CANDLE_METADATA),
    "upbit_markets": (daily_partitions, {"partition_expr": "day", "primary_key": ["day", "market"], "write_mode": WriteMode.REPLACE}),
    "upbit_instruments": (daily_partitions, {"partition_expr": "day", "primary_key": ["day", "market"], "write_mode": WriteMode.MERGE}),
    "orderbook_top": (hourly_partitions, {"partition_expr": "as_of", "primary_key": ["as_of", "market"], "write_mode": WriteMode.MERGE}),
}
BOOK_FETCHED = pd.Timedelta(seconds=20)  # after the tick, as the recommendations job's orderbook_top step fetches it


@dataclass(frozen=True)
class AssetBench:
    """How to time one analysis asset: its definition, the tick, the vectorised compute and a per-market loop."""

    asset: dg.AssetsDefinition
    tick: pd.Timestamp
    compute: Callable[[dict[str, pd.DataFrame], pd.Timestamp], pd.DataFrame]
    loop: Callable[[dict[str, pd.DataFrame], pd.Timestamp], pd.DataFrame]
    same: Callable[[pd.DataFrame, pd.DataFrame], None]

    @property
    def name(self) -> str:
        return self.asset.key.to_user_string()


def _inputs(lookback: Lookback, inputs: dict[str, pd.DataFrame], tick: pd.Timestamp) -> AnalysisInputs:
    """The analysis contract's inputs of one tick, from the frames the asset's inputs loaded."""
    return AnalysisInputs.assemble(lookback, pd.DatetimeIndex([tick]), candles_1m=inputs["candles_1m"], candles_1h=inputs["candles_1h"],
                                   candles_1d=inputs.get("candles_1d"), upbit_markets=inputs["upbit_markets"],
                                   upbit_instruments=inputs.get("upbit_instruments"), orderbook_top=inputs.get("orderbook_top"))



# --- market_status -------------------------------------------------------------------------

def status_compute(inputs: dict[str, pd.DataFrame], tick: pd.Timestamp) -> pd.DataFrame:
    return status_analysis.compute_market_status(_inputs(status_analysis.LOOKBACK, inputs, tick), pd.DatetimeIndex([tick])).frame


def status_loop(inputs: dict[str, pd.DataFrame], tick: pd.Timestamp) -> pd.DataFrame:
    """Per market: reindex its minutes onto the grid, carry the close, read the returns and turnover."""
    candles, hours = inputs["candles_1m"], inputs["candles_1h"]
    start = HOUR - pd.Timedelta(hours=status_analysis.LOOKBACK.minute_hours)
    grid = pd.date_range(start, tick, freq="1min", inclusive="left")
    rows = []
    for market in candles["market"].unique():
        own = candles[candles["market"] == market].set_index("candle_start")
        close = own["close"].reindex(own.index.union(grid)).ffill().reindex(grid)
        value = own["value"].reindex(grid, fill_value=0.0)
        own_hours = hours[(hours["market"] == market) & (hours["candle_start"] < tick.floor("D"))]
        now = close.loc[tick - pit.MINUTE]
        rows.append({
            "ret_1h": now / close.loc[tick - pd.Timedelta(minutes=61)] - 1,
            "ret_day": now / own_hours.sort_values("candle_start")["close"].iloc[-1] - 1,
            "turnover": value.loc[tick - pit.HOUR: tick - pit.MINUTE].sum(),
        })
    stats = pd.DataFrame(rows)
    return pd.DataFrame({"breadth_1h": [(stats["ret_1h"] > 0).mean()], "breadth_day": [(stats["ret_day"] > 0).mean()],
                         "turnover_krw_1h": [stats["turnover"].sum()]})


def status_same(vectorised: pd.DataFrame, looped: pd.DataFrame) -> None:
    for column in looped.columns:
        np.testing.assert_allclose(vectorised[column].to_numpy(), looped[column].to_numpy(), rtol=1e-9, err_msg=column)


# --- support_levels ------------------------------------------------------------------------

def levels_compute(inputs: dict[str, pd.DataFrame], tick: pd.Timestamp) -> pd.DataFrame:
    return levels_analysis.compute_support_levels(_inputs(levels_analysis.LOOKBACK, inputs, tick), pd.DatetimeIndex([tick])).frame


def levels_loop(inputs: dict[str, pd.DataFrame], tick: pd.Timestamp) -> pd.DataFrame:
    """The same method called market by market on that market's slices."""
    history = _inputs(levels_analysis.LOOKBACK, inputs, tick).history
    hourly, price = history.hourly(tick), history.price(tick)
    daily = history.daily(tick, hourly)
    frames = []
    for market in price.index:
        frames.append(levels_analysis.levels_at(
            hourly[hourly["market"] == market], daily[daily["market"] == market], price.loc[[market]], tick))
    return pd.concat(frames, ignore_index=True)


def levels_same(vectorised: pd.DataFrame, looped: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(vectorised[looped.columns].reset_index(drop=True), looped, check_exact=False, rtol=1e-9)


# --- recommendations -----------------------------------------------------------------------

def _recs_params() -> recs_analysis.RecommendationParams:
    settings = load_settings()
    return recs_analysis.RecommendationParams(settings.min_turnover_krw, settings.min_reward_risk, (settings.scorer,))


def recs_compute(inputs: dict[str, pd.DataFrame], tick: pd.Timestamp) -> pd.DataFrame:
    return recs_analysis.compute_recommendations(_inputs(recs_analysis.LOOKBACK, inputs, tick), pd.DatetimeIndex([tick]), _recs_params()).frame


def recs_loop(inputs: dict[str, pd.DataFrame], tick: pd.Timestamp) -> pd.DataFrame:
    """A market's pick depends on its own candles and book and on the whole market's regime: the regime once, then
    market by market, then rank."""
    params = _recs_params()
    regime = recs_analysis.regime_at(_inputs(recs_analysis.LOOKBACK, inputs, tick), tick, params.status)
    frames = []
    for market in inputs["upbit_markets"]["market"].unique():
        own = _inputs(recs_analysis.LOOKBACK, {name: frame[frame["market"] == market] for name, frame in inputs.items()}, tick)
        frames.append(recs_analysis.recommend_from_books(own, tick, params, regime).picks)
    ranked = pd.concat([f for f in frames if len(f)], ignore_index=True).sort_values("market")
    return ranked.sort_values("score", ascending=False, kind="stable").head(recs_analysis.TOP_N).reset_index(drop=True)


def recs_same(vectorised: pd.DataFrame, looped: pd.DataFrame) -> None:
    columns = ["market", "score", "entry", "target", "stop", "caution"]
    pd.testing.assert_frame_equal(vectorised[columns], looped[columns], check_exact=False, rtol=1e-9)


BENCHES = [
    AssetBench(MARKET_STATUS.asset, HOUR + pd.Timedelta(minutes=58), status_compute, status_loop, status_same),
    AssetBench(SUPPORT_LEVELS.asset, HOUR + pd.Timedelta(minutes=45), levels_compute, levels_loop, levels_same),
    AssetBench(RECOMMENDATIONS.asset, RECOMMENDATIONS_TICK, recs_compute, recs_loop, recs_same),
]


# --- data and timing -----------------------------------------------------------------------

def upstream_range(asset: dg.AssetsDefinition, upstream: str) -> dg.PartitionKeyRange:
    """The upstream partitions the asset's mapping reads for PARTITION (one range)."""
    partitions_def = UPSTREAM[upstream][0]
    mapping = asset.get_partition_mapping(dg.AssetKey(upstream)) or dg.IdentityPartitionMapping()  # none declared: the same partition
    subset = hourly_partitions.empty_subset().with_partition_keys([PARTITION])
    mapped = mapping.get_upstream_mapped_partitions_result_for_partitions(subset, hourly_partitions, partitions_def)
    (key_range,) = mapped.partitions_subset.get_partition_key_ranges(partitions_def)
    return key_range


def store(io_manager: PostgresDataFrameIOManager, name: str, frame: pd.DataFrame) -> None:
    partitions_def, metadata = UPSTREAM[name]
    time_column = metadata["partition_expr"]
    first = partitions_def.get_partition_key_for_timestamp(max(frame[time_column].min(), pd.Timestamp(partitions_def.start)).timestamp())
    last = partitions_def.get_partition_key_for_timestamp(frame[time_column].max().timestamp())
    window = dg.TimeWindow(partitions_def.time_window_for_partition_key(first).start, partitions_def.time_window_for_partition_key(last).end)
    inside = frame[(frame[time_column] >= window.start) & (frame[time_column] < window.end)].reset_index(drop=True)
    with dg.build_output_context(asset_key=name, definition_metadata=metadata, asset_partitions_def=partitions_def,
                                 asset_partition_key_range=dg.PartitionKeyRange(first, last), run_id="bench") as context:
        io_manager.handle_output(context, inside)


def input_contexts(bench: AssetBench, opened: ExitStack) -> dict[str, dg.InputContext]:
    """The InputContext of every input, as the run would hand them to ``load_input`` (built once, not timed; closed
    with ``opened``)."""
    contexts = {}
    for key in bench.asset.keys_by_input_name.values():
        name = key.to_user_string()
        partitions_def, metadata = UPSTREAM[name]
        upstream = opened.enter_context(dg.build_output_context(asset_key=name, definition_metadata=metadata))
        contexts[name] = opened.enter_context(dg.build_input_context(
            asset_key=name, upstream_output=upstream, asset_partitions_def=partitions_def,
            asset_partition_key_range=upstream_range(bench.asset, name)))
    return contexts


def read(io_manager: PostgresDataFrameIOManager, contexts: dict[str, dg.InputContext],
         seconds: dict[str, float]) -> dict[str, pd.DataFrame]:
    """Every input through ``load_input``; ``seconds`` collects each input's read time."""
    inputs = {}
    for name, context in contexts.items():
        started = time.perf_counter()
        inputs[name] = io_manager.load_input(context)
        seconds[name] = time.perf_counter() - started
    return inputs


def write(io_manager: PostgresDataFrameIOManager, bench: AssetBench, frame: pd.DataFrame) -> float:
    """Seconds of one ``handle_output``, its context built before the clock (a context takes its metadata once, so
    each write gets a fresh one)."""
    with output_context(bench) as context:
        started = time.perf_counter()
        io_manager.handle_output(context, frame)
        return time.perf_counter() - started


def output_context(bench: AssetBench) -> dg.OutputContext:
    """The asset's OutputContext for PARTITION."""
    return dg.build_output_context(asset_key=bench.name, definition_metadata=bench.asset.metadata_by_key[bench.asset.key],
                                   asset_partitions_def=hourly_partitions,
                                   partition_key=PARTITION, run_id="bench")


def push(snapshots: SnapshotStore, bench: AssetBench, frame: pd.DataFrame) -> None:
    """What the asset's publish step does (``support_levels_redis`` writes one key per market too)."""
    snapshots.publish(bench.name, frame, run_id="bench", partition=PARTITION, per_market=bench.name == "support_levels")


def timed(action: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median seconds over ``repeat`` runs, and the last result."""
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--markets", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each step (median reported)")
    args = parser.parse_args()

    schema, prefix = f"bench_analysis_{os.getpid()}", f"bench_analysis_{os.getpid()}"
    postgres = PostgresResource(url=args.url, db_schema=schema)
    redis = RedisResource(url=args.redis, prefix=prefix)
    io_manager = PostgresDataFrameIOManager(postgres=postgres)
    snapshots = SnapshotStore(redis=redis, postgres=postgres, ttls={bench.name: 300 for bench in BENCHES},
                              served_rows={"recommendations": {"scorer": load_settings().scorer}})
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    started = time.perf_counter()
    data = simulated_upstream(args.markets, HOUR)
    data["orderbook_top"] = simulated_books(args.markets, RECOMMENDATIONS_TICK + BOOK_FETCHED)
    generated = time.perf_counter() - started

    postgres.execute(f'CREATE SCHEMA "{schema}"')
    results = {}
    try:
        for name, frame in data.items():
            store(io_manager, name, frame)
        for bench in BENCHES:
            per_input: dict[str, float] = {}
            with ExitStack() as opened:
                contexts = input_contexts(bench, opened)
                read_s, inputs = timed(lambda: read(io_manager, contexts, per_input), args.repeat)
            compute_s, frame = timed(lambda: bench.compute(inputs, bench.tick), args.repeat)
            loop_s, looped = timed(lambda: bench.loop(inputs, bench.tick), 1)
            bench.same(frame, looped)
            write_s = statistics.median(write(io_manager, bench, frame) for _ in range(args.repeat))
            push_s, _ = timed(lambda: push(snapshots, bench, frame), args.repeat)
            results[bench.name] = {
                "rows_read": sum(len(f) for f in inputs.values()), "rows_written": len(frame),
                "read": read_s, "compute": compute_s, "write": write_s, "push": push_s,
                "tick": read_s + compute_s + write_s + push_s, "loop": loop_s, "vs_loop": loop_s / compute_s,
                "read_last_run": {name: f"{len(inputs[name])} rows {t:.3f} s" for name, t in per_input.items()},
            }
    finally:
        postgres.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        client = redis.client()
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)

    table = [[name, r["rows_read"], r["rows_written"], *(f"{r[k]:.3f}" for k in ("read", "compute", "write", "push", "tick", "loop")),
              f"{r['vs_loop']:.1f}x"] for name, r in results.items()]
    print(f"{args.markets} simulated markets, partition {PARTITION}, one tick per asset, median of {args.repeat} "
          f"(loop: 1 run); data generated in {generated:.1f} s; schema {schema} (dropped)")
    print(tabulate(table, headers=["asset", "rows read", "rows out", "read s", "compute s", "write s", "push s", "tick s",
                                   "loop s", "loop/compute"], tablefmt="github"))
    for name, r in results.items():
        print(f"{name} reads (last run): " + ", ".join(f"{k} {v}" for k, v in r["read_last_run"].items()))
    print(f"load average before/after: {load_before} / {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print(f"command: {shlex.join([os.path.basename(sys.executable), *sys.argv])}")
    print(json.dumps({
        "tick_seconds": round(max(r["tick"] for r in results.values()), 3),
        "compute_seconds": round(max(r["compute"] for r in results.values()), 3),
        "vs_loop": round(min(r["vs_loop"] for r in results.values()), 1),
        "assets": {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for name, r in results.items()},
    }))


if __name__ == "__main__":
    main()
