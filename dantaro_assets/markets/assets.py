"""The only assets that call Upbit: the day's KRW universe, its 1-minute, 1-hour and 1-day candles and its order books.

Candles are facts: a refetch merges and only ``dantaro candles delete`` removes them; the blocking checks run
before anything is written. Upbit keeps no history of its listing, tick sizes or books, so those are what
it said when fetched (docs/upbit.md, docs/storage.md).
"""


from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Literal

import dagster as dg
import pandas as pd

from dantaro_assets.lib.checks import checked, pandera_check, schema_check_spec
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import WriteMode
from dantaro_assets.lib.run_settings import RunSettings
from dantaro_assets.lib.upbit import BOOK_COLUMNS, MARKET_COLUMNS, FetchStats, UpbitClient, UpbitError, interval
from dantaro_assets.lib.upbit.parsing import empty_books
from dantaro_assets.markets.audit import differences, fetch_planned
from dantaro_assets.markets.candles import (
    MissingUniverseError,
    coverage,
    keep_listed,
    stored_markets,
    universe_markets,
)
from dantaro_assets.markets.schemas import (
    candles_schema,
    orderbook_top_schema,
    upbit_instruments_schema,
    upbit_markets_schema,
)
from dantaro_assets.markets.seen import AUDIT, Plan, RecordUnreadable, SeenStore, fetched_windows, plan_fetch
from dantaro_assets.operations.limits import FINALISE_TAG
from dantaro_assets.partitions import (
    daily_backfill,
    daily_partitions,
    freshness,
    hourly_backfill,
    hourly_partitions,
)
from dantaro_assets.redaction import redact_text

# Step retries (DANTARO_RUN_RETRIES) are the jobs' op_retry_policy (markets/jobs.py, operations/jobs.py).
_UPBIT_STEP = {"pool": "upbit_api", "group_name": "markets", "kinds": {"python", "postgres"}}
# The day's listing and tick sizes: refreshed hourly by daily_candles_job.
_UPBIT_DAILY = {"partitions_def": daily_partitions, "backfill_policy": daily_backfill, "freshness_policy": freshness(3600), **_UPBIT_STEP}


@dg.asset(
    # The listing as fetched: Upbit keeps no history of it, so the day's newest listing stands.
    metadata={"partition_expr": "day", "primary_key": ["day", "market"], "write_mode": WriteMode.REPLACE.value},
    check_specs=[schema_check_spec("upbit_markets")],
    description="KRW markets of the day with Upbit's warning and five caution flags (the listing as fetched: Upbit keeps no history).",
    **_UPBIT_DAILY,
)
def upbit_markets(context: dg.AssetExecutionContext, upbit: UpbitClient) -> Iterator:
    window = context.partition_time_window
    days = pd.date_range(window.start, window.end, freq="D", inclusive="left")
    listing = upbit.markets()
    listed_at = datetime.now(UTC).isoformat()
    frame = pd.concat([listing.assign(day=day) for day in days], ignore_index=True)[["day", *MARKET_COLUMNS]]
    metadata = {"markets": len(listing), "warning": int(listing["warning"].sum()), "days": len(days), "listed_at": listed_at}
    yield from checked(pandera_check(upbit_markets_schema(pd.Timestamp(window.start), pd.Timestamp(window.end)), frame), metadata=metadata)
    yield dg.Output(frame, metadata=metadata)


@dg.asset(
    # Upbit keeps no history of tick sizes: the day's newest answer corrects a stored tick, and a market
    # left unanswered (or an empty answer) keeps the tick stored for it.
    metadata={"partition_expr": "day", "primary_key": ["day", "market"], "write_mode": WriteMode.MERGE.value},
    check_specs=[schema_check_spec("upbit_instruments")],
    description=("Order price unit (tick_size) of each KRW market of the day, from /v1/orderbook/instruments: "
                 "the grid recommendation prices are rounded to (the documented KRW table where none is stored)."),
    **_UPBIT_DAILY,
)
def upbit_instruments(context: dg.AssetExecutionContext, upbit: UpbitClient, upbit_markets: pd.DataFrame) -> Iterator:
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    listed = upbit_markets[(upbit_markets["day"] >= start) & (upbit_markets["day"] < end)]
    if listed.empty:
        raise dg.Failure(f"no KRW universe stored for {start:%Y-%m-%d}..{end:%Y-%m-%d}: materialise upbit_markets first",
                         allow_retries=False)
    ticks = upbit.instruments(sorted(listed["market"].unique()))
    frame = listed[["day", "market"]].merge(ticks, on="market", how="inner").reset_index(drop=True)
    metadata = {"markets": int(ticks["market"].nunique()), "unanswered": int(listed["market"].nunique() - ticks["market"].nunique()),
                "tick_sizes": int(ticks["tick_size"].nunique())}
    yield from checked(pandera_check(upbit_instruments_schema(start, end), frame), metadata=metadata)
    yield dg.Output(frame, metadata=metadata)


def _window_universe(context: dg.AssetExecutionContext, upbit_markets: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp, list[str]]:
    """The partition's window (UTC) and the markets listed on its days; a day without a stored universe is a
    failure naming it (not retried: upbit_markets must be materialised first)."""
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    try:
        return start, end, universe_markets(upbit_markets, start, end)
    except MissingUniverseError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None


ORDERBOOK_TOP_COLUMNS = ["as_of", *BOOK_COLUMNS]


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=hourly_backfill,  # the recommendations job's candles_1m step's: one policy per job
    # A book is a fact of the moment it was fetched: each fetch adds its rows (as_of, market), none is replaced.
    metadata={"partition_expr": "as_of", "primary_key": ["as_of", "market"], "write_mode": WriteMode.MERGE.value},
    check_specs=[schema_check_spec("orderbook_top")],
    description=("Top of the order book (best ask and bid, their sizes, spread_bps) of every KRW market of the day, from "
                 "/v1/orderbook, as_of = when it was fetched on Upbit's clock: the entry a buyer can get. Fetched by the "
                 "recommendations job; a run of an hour that has passed on Upbit's clock stores nothing (no book history), "
                 "nor does a failed fetch (metadata fetched: failed: ..., the picks then enter at the last trade)."),
    **_UPBIT_STEP,
)
def orderbook_top(context: dg.AssetExecutionContext, upbit: UpbitClient, upbit_markets: pd.DataFrame) -> Iterator:
    start, end, markets = _window_universe(context, upbit_markets)
    try:
        books, stats = upbit.orderbook(markets)
        fetched = "ok"
    except UpbitError as exc:  # after the client's retries; a stopped run (FetchStopped) still stops
        # The book improves the picks' entry; without it they enter at the last trade, so an Upbit failure
        # is no book this run, said here and in the run log, and never costs the job its picks.
        fetched = f"failed: {redact_text(str(exc))}"
        context.log.warning(f"orderbook_top: no order book stored this run, the picks enter at the last trade ({fetched})")
        books, stats = empty_books(), FetchStats(markets_requested=len(markets))
    as_of = stats.server_time.floor("s") if stats.server_time is not None else None
    in_window = as_of is not None and start <= as_of < end
    kept = books if in_window else books.iloc[:0]
    frame = kept.assign(as_of=pd.Series(as_of, index=kept.index, dtype="datetime64[ns, UTC]"))[ORDERBOOK_TOP_COLUMNS]
    metadata = {
        "fetched": fetched,
        "as_of": str(as_of), "markets_requested": stats.markets_requested, "markets_returned": stats.markets_returned,
        "unanswered": stats.markets_requested - stats.markets_returned, "books_stored": len(frame), "requests": stats.requests,
        "http_429": stats.http_429, "retries": stats.retries, "seconds": round(stats.seconds, 3),
        "spread_bps_median": round(float(books["spread_bps"].median()), 2) if len(books) else "n/a",
        "spread_bps_p90": round(float(books["spread_bps"].quantile(0.9)), 2) if len(books) else "n/a",
    }
    if fetched == "ok" and not in_window:
        metadata["not_stored"] = f"fetched at {as_of} on Upbit's clock, outside the partition's hour: a book belongs to the hour it is seen in"
    yield from checked(pandera_check(orderbook_top_schema(start, end), frame), metadata=metadata)
    yield dg.Output(frame, metadata=metadata)


class MinuteSource(dg.Config):
    """Where ``candles_1m``'s minutes come from. ``rest``: the whole window from Upbit (the history sensor, backfills
    of the asset, a manual materialisation). ``stream``: what ``dantaro stream`` stored, and over REST only the minutes
    it did not see; the analysis jobs set it in their job config (shown, and editable, in the launchpad)."""

    source: Literal["stream", "rest"] = "rest"


def _stream_plan(
    context: dg.AssetExecutionContext, postgres: PostgresResource, markets: list[str], start: pd.Timestamp, end: pd.Timestamp, max_lag_seconds: float,
) -> Plan:
    """The REST fetch of a ``stream`` run's ``candles_1m``: what the stream did not see (a final run: the hour's audit)."""
    plan = plan_fetch(SeenStore(postgres), markets, start, end, final=FINALISE_TAG in context.run.tags, max_lag=max_lag_seconds)
    context.log.info(f"candles_1m {plan.source}: {plan.why}; fetching {len(plan.fetch)} market(s) over REST")
    return plan


def _candle_asset(
    name: str,
    interval_name: str,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    backfill: dg.BackfillPolicy,
    refresh_seconds: int | None,
    description: str,
) -> dg.AssetsDefinition:
    spec = interval(interval_name)
    decorate = dg.asset(
        name=name,
        partitions_def=partitions_def,
        backfill_policy=backfill,
        # Candles are facts: a refetch adds and corrects rows, never deletes them (docs/storage.md).
        metadata={
            "partition_expr": "candle_start",
            "primary_key": ["market", "candle_start"],
            "write_mode": WriteMode.MERGE.value,
            "interval": interval_name,
        },
        check_specs=[
            schema_check_spec(name),
            dg.AssetCheckSpec("coverage", asset=name, blocking=True, description="share of the universe answered (>= DANTARO_MIN_COVERAGE)"),
        ],
        freshness_policy=None if refresh_seconds is None else freshness(refresh_seconds),
        description=description,
        **_UPBIT_STEP,
    )

    def fetch(context: dg.AssetExecutionContext, upbit: UpbitClient, postgres: PostgresResource, run_settings: RunSettings,
              upbit_markets: pd.DataFrame, source: str) -> Iterator:
        start, end, markets = _window_universe(context, upbit_markets)
        plan = _stream_plan(context, postgres, markets, start, end, run_settings.stream_max_lag_seconds) if source == "stream" else None
        if plan is None:
            fetched, stats = upbit.candles(markets, interval_name, start, end)
        else:
            fetched, stats = fetch_planned(upbit, plan, interval_name)
        candles = keep_listed(fetched, upbit_markets)
        stats.candles = len(candles)
        # Markets not fetched are judged by what is stored: the stream wrote them, or an earlier run did.
        with_candles = set(candles["market"]) | (stored_markets(postgres, name, start, end) if plan is not None else set())
        covered = coverage(with_candles, markets, stats, spec, start, end, pd.Timestamp(datetime.now(UTC)), run_settings.min_coverage)
        coverage_result = dg.AssetCheckResult(
            check_name="coverage",
            passed=covered.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=covered.description,
            metadata=covered.metadata(),
        )
        metadata = stats.metadata() | (plan.metadata() if plan is not None else {"source": "rest"})
        if plan is not None and plan.source == AUDIT:
            metadata |= differences(postgres, candles, plan.fetch)
        # Both blocking checks are reported before anything is stored; either failing keeps the stored rows.
        yield from checked(pandera_check(candles_schema(start, end), candles), coverage_result, metadata=metadata)
        yield dg.Output(candles, metadata=metadata)
        if interval_name == "minute1" and stats.server_time is not None:
            # Runs once the output is stored: the ranges fetched are not fetched again by the next run.
            try:
                SeenStore(postgres).record(fetched_windows(plan, markets, start, end, stats, run_settings.stream_grace_seconds))
            except RecordUnreadable as exc:  # stored all the same; the next run fetches these ranges again
                context.log.warning(f"candles_1m: the REST ranges fetched could not be recorded ({type(exc).__name__}: {exc})")

    # Dagster reads the config class from the annotation, so candles_1m's function differs by its config argument only.
    if interval_name == "minute1":
        def _asset(context: dg.AssetExecutionContext, config: MinuteSource, upbit: UpbitClient, postgres: PostgresResource,
                   run_settings: RunSettings, upbit_markets: pd.DataFrame) -> Iterator:
            yield from fetch(context, upbit, postgres, run_settings, upbit_markets, config.source)
    else:
        def _asset(context: dg.AssetExecutionContext, upbit: UpbitClient, postgres: PostgresResource, run_settings: RunSettings,
                   upbit_markets: pd.DataFrame) -> Iterator:
            yield from fetch(context, upbit, postgres, run_settings, upbit_markets, "rest")

    return decorate(_asset)


# candles_1m's freshness follows the market status cadence, a setting: markets/definitions.py sets it.
candles_1m = _candle_asset("candles_1m", "minute1", hourly_partitions, hourly_backfill, None,
    "Closed 1-minute OHLCV + KRW turnover of every KRW market, per UTC hour.")
candles_1h = _candle_asset("candles_1h", "minute60", daily_partitions, daily_backfill, 3600,
    "Closed 1-hour OHLCV + KRW turnover of every KRW market, per UTC day.")
candles_1d = _candle_asset("candles_1d", "day", daily_partitions, daily_backfill, 3600, "Closed UTC-day OHLCV + KRW turnover of every KRW market, per UTC day.")
