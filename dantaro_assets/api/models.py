"""The API's answers as pydantic models (FastAPI builds ``/openapi.json`` and ``/docs`` from them), and its market codes.

``WorkerStatus`` and ``Job`` carry the worker contract: its fields (``worker_active``, ``last_jobs``,
``uptime``; a job's ``job_id`` ... ``timestamp``) are required, nullable where the contract allows null.
Snapshot rows list every column the pipeline writes, typed, none required: the API serves rows as they
were stored, and a snapshot stored before a column existed lacks it; unlisted columns pass through.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# ASCII only and matched whole (re's `$` would accept a trailing newline), checked before upper-casing:
# str.upper maps some non-ASCII letters to ASCII ones ("ſ" -> "S").
MARKET_PATTERN = r"^[A-Za-z]{2,5}-[A-Za-z0-9]{1,15}$"
_MARKET = re.compile(MARKET_PATTERN.removeprefix("^").removesuffix("$"))


def parse_market(raw: str) -> str | None:
    """An Upbit market code from a request (``krw-btc`` is read as ``KRW-BTC``), or None if ``raw`` is not one."""
    return raw.upper() if _MARKET.fullmatch(raw) else None

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"}, examples=["2026-03-10T11:00:00Z"],
                                 description="UTC, ISO-8601 with a Z, to the second")]
Percent = Annotated[float | None, Field(description="percent, rounded to 2 decimals")]
Score = Annotated[float | None, Field(description="0-100, rounded to 2 decimals")]
Price = Annotated[float | None, Field(description="KRW, on the market's tick grid")]


class Problem(BaseModel):
    """Every error answer: what went wrong, never the raw input nor a host, port or driver message."""

    detail: str


class Health(BaseModel):
    status: Literal["ok"]


# --- /worker/status ---------------------------------------------------------------------------

class Job(BaseModel):
    """One run in the job log (``api/job_log.py``): the contract's fields, then Dagster's view."""

    job_id: str = Field(description="the Dagster run id")
    job_type: str = Field(description="the dantaro/job tag (market_status, recommendations, ...)")
    status: Literal["completed", "failed", "running", "queued"]
    duration: float | None = Field(description="seconds from start to end (to now while running); null before it starts")
    symbols_processed: int | None = Field(description="markets the run processed; null when it reported none")
    error: str | None = Field(description="the root cause of a failed run, URLs redacted")
    timestamp: Timestamp = Field(description="when the run was created")
    dagster_status: str = Field(description="Dagster's run status, e.g. SUCCESS, CANCELED")
    job_name: str
    partition: str | None
    duration_s: float | None = Field(description="same as duration")
    markets_processed: int | None = Field(description="same as symbols_processed")
    started_at: Timestamp | None
    ended_at: Timestamp | None


class Daemon(BaseModel):
    healthy: bool
    last_heartbeat: Timestamp | None


class StreamStatus(BaseModel):
    """``dantaro stream``'s health as it records it beside the candles in Postgres, read per request."""

    state: Literal["healthy", "starting", "down", "lagging", "stopped", "never ran", "unknown"]
    healthy: bool
    problem: str | None
    lag_s: float | None = None
    messages_per_s: float | None = Field(None, description="of its last report")
    reconnects: int | None = Field(None, description="since it started")
    markets: int | None = None
    minutes_written: int | None = Field(None, description="since it started")
    no_trade_minutes: int | None = Field(None, description="market-minutes without a trade inside what it saw, since it started")
    missed_minutes: int | None = Field(None, description="market-minutes it did not see (disconnected, not subscribed, quarantined) since it started")
    quarantined: int | None = Field(None, description="minutes it quarantined and left to REST since it started")
    heartbeat: Timestamp | None = None
    covered_through: Timestamp | None = None


class WorkerStatus(BaseModel):
    """The worker contract (worker_active, last_jobs, uptime) and what explains it."""

    worker_active: bool = Field(description="the daemon's scheduler and run queue both beat within 60 s")
    last_jobs: list[Job] = Field(description="newest first")
    uptime: float = Field(description="seconds since the API started")
    uptime_s: float = Field(description="same as uptime")
    daemons: dict[str, Daemon]
    running_schedules: list[str]
    config_problems: list[str] = Field(description="where the instance's run queue disagrees with the settings")
    cached_at: Timestamp = Field(description="when this answer was computed (in the background)")
    cache_age: float = Field(description="seconds since cached_at")
    stream: StreamStatus


# --- snapshots ------------------------------------------------------------------------------

class Row(BaseModel):
    model_config = ConfigDict(extra="allow")

    as_of: Timestamp | None = None


class MarketStatusRow(Row):
    """The market at one tick: a regime from a 0-100 score and what it is made of."""

    regime: str | None = Field(None, description="risk_on, neutral or risk_off")
    summary: str | None = None
    score: Score = None
    score_breadth: Score = None
    score_trend: Score = None
    score_momentum: Score = None
    score_calm: Score = None
    markets: int | None = None
    markets_warning: int | None = None
    markets_caution: int | None = None
    breadth_1h: float | None = Field(None, description="share of markets up over the hour, 0-1")
    breadth_day: float | None = Field(None, description="share of markets up on the day, 0-1")
    median_return_1h_pct: Percent = None
    dispersion_1h_pct: Percent = None
    turnover_krw_1h: float | None = None
    turnover_ratio_24h: float | None = None
    btc_price: Price = None
    btc_return_1h_pct: Percent = None
    btc_ema_20h: Price = None
    btc_vs_ema_pct: Percent = None
    btc_ema_slope_pct_h: Percent = None
    btc_vol_1h_pct: Percent = None
    btc_vol_24h_pct: Percent = None
    btc_vol_annualised_pct: Percent = None


class RecommendationRow(Row):
    """One pick: a market, its score and a plan on Upbit's price grid."""

    scorer: str | None = None
    rank: int | None = None
    market: str | None = None
    score: Score = None
    trend: Score = None
    momentum: Score = None
    volume_surge: Score = None
    support_distance: Score = None
    resistance_distance: Score = None
    volatility: Score = None
    reasons: dict[str, Any] | None = None
    summary: str | None = None
    entry: Price = None
    target: Price = None
    stop: Price = None
    reward_risk: float | None = None
    p_target_first: float | None = Field(None, description="chance the target is touched before the stop within the horizon, 0-1")
    expected_return_net: float | None = Field(None, description="expected return of the plan net of the fee on both legs (a fraction)")
    horizon_hours: int | None = Field(None, description="how long the plan is held")
    expires_at: Timestamp | None = Field(None, description="as_of + horizon_hours: the plan is not served after it")
    entry_from: str | None = Field(None, description="where the entry price comes from: best_ask (the tick's order book) or "
                                   "last_trade (rounded up to the tick; no book fetched for the tick)")
    spread_bps: float | None = Field(None, description="the order book's spread, (best ask - best bid) / mid in basis points, "
                                     "at most DANTARO_MAX_SPREAD_BPS; null for a last_trade entry")
    tick_size: float | None = None
    regime: str | None = None
    caution: list[str] | None = Field(None, description="Upbit's caution flags on the market")


class SupportLevelRow(Row):
    """One support or resistance level of a market and its zone."""

    market: str | None = None
    side: str | None = Field(None, description="support (entirely below the price), resistance (entirely above) or at_price "
                             "(the zone the price trades in)")
    rank: int | None = None
    price: Price = None
    level: Price = None
    zone_low: Price = None
    zone_high: Price = None
    strength: Score = None
    touches: int | None = None
    volume_share: float | None = None
    pivot: Any = None
    distance_pct: Percent = None
    atr: float | None = None
    warning: bool | None = None
    caution: bool | None = None
    tick_size: float | None = None
    reasons: dict[str, Any] | None = None


class Snapshot(BaseModel):
    """The newest snapshot of a product across Redis and Postgres; rows rounded for people (storage keeps full precision)."""

    asset: str
    as_of: Timestamp
    run_id: str | None
    partition: str | None
    source: Literal["redis", "postgres", "memory"] = Field(
        description="redis unless Postgres holds a newer as_of, or Redis has none or is down; memory: the answer this API served "
        "before, again, while both stores hold only older ones")


class MarketStatusSnapshot(Snapshot):
    rows: list[MarketStatusRow]


class RecommendationsSnapshot(Snapshot):
    rows: list[RecommendationRow] = Field(description="the served scorer's picks, by rank")
    expired: int = Field(0, description="picks left out because their horizon ended (expires_at): only when the pipeline stopped")


class SupportLevelsSnapshot(Snapshot):
    rows: list[SupportLevelRow]
    ranking: str = Field(description="how rank orders the levels")


# --- scorecard ------------------------------------------------------------------------------

class ScorecardRow(BaseModel):
    window: str
    scorer: str
    horizon: str
    picks: int
    ticks: int
    hit_rate: float | None = Field(description="share of picks that beat the equal-weight universe, net of fees")
    mean_excess: float | None
    excess_ci_low: float | None
    excess_ci_high: float | None
    rank_ic: float | None
    target_before_stop: float | None


class Scorecard(BaseModel):
    """How every scorer's picks did (served and shadow) over the last 7 and 30 days, per horizon."""

    until: Timestamp | None = Field(description="the newest graded tick: the windows end here; null before anything is graded")
    served: str = Field(description="the scorer whose picks /recommendations/latest serves")
    scorers: dict[str, str]
    windows: list[str]
    horizons: list[str]
    rows: list[ScorecardRow]


# --- candles --------------------------------------------------------------------------------

CandleInterval = Literal["1m", "5m", "15m", "1h", "1d"]


class Candle(BaseModel):
    """One candle as Upbit traded it: prices are trades, so on the market's tick grid already."""

    start: Timestamp = Field(description="the candle's open time (a 1d candle starts at 00:00 UTC, 09:00 KST)")
    open: float
    high: float
    low: float
    close: float
    volume: float = Field(description="coin units")
    value: float = Field(description="KRW traded")


class Candles(BaseModel):
    """The newest stored candles of a market, oldest first (5m and 15m are built from the 1m candles)."""

    market: str
    interval: CandleInterval
    candles: list[Candle]


# --- events ---------------------------------------------------------------------------------

class EventMessage(BaseModel):
    """One message of ``/ws`` (``/events`` sends the same as ``id``, ``event`` (the topic) and ``data``)."""

    id: Timestamp = Field(description="the snapshot's as_of")
    topic: str = Field(examples=["market_status", "support_levels:KRW-BTC"])
    data: MarketStatusSnapshot | RecommendationsSnapshot | SupportLevelsSnapshot
