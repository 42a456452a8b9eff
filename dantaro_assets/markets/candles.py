"""What a candle partition holds: the day's universe, point-in-time filtering, what is stored and coverage (no Dagster here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pandas as pd

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import table_exists
from dantaro_assets.lib.upbit import CANDLE_COLUMNS, FetchStats, Interval

_DAY = pd.Timedelta(days=1)


class MissingUniverseError(ValueError):
    """The candle window covers a day whose upbit_markets partition holds no rows."""


def window_days(start: pd.Timestamp, end: pd.Timestamp) -> pd.DatetimeIndex:
    """Midnights (UTC) of every day the window ``[start, end)`` touches."""
    return pd.date_range(start.floor("D"), (end - pd.Timedelta(microseconds=1)).floor("D"), freq="D")


def universe_markets(universe: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
    """Markets listed on any day of the window; every one of those days must have its universe stored."""
    days = window_days(start, end)
    present = set(pd.DatetimeIndex(universe["day"]).unique()) if len(universe) else set()
    missing = [d.strftime("%Y-%m-%d") for d in days if d not in present]
    if missing:
        raise MissingUniverseError(
            f"no KRW universe stored for {', '.join(missing)}: materialise upbit_markets for "
            f"{'that day' if len(missing) == 1 else 'those days'} first (candles are fetched for that day's markets)"
        )
    return sorted(universe.loc[universe["day"].isin(days), "market"].unique())


def keep_listed(candles: pd.DataFrame, universe: pd.DataFrame) -> pd.DataFrame:
    """Only candles of markets in the universe of the candle's own day (point in time)."""
    listed = universe[["day", "market"]].drop_duplicates()
    keyed = candles.assign(day=candles["candle_start"].dt.floor("D"))
    return keyed.merge(listed, on=["day", "market"], how="inner")[CANDLE_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class Coverage:
    """How much of the universe a candle partition reached, and whether that is enough."""

    universe: int
    answered: int
    with_candles: int
    closed: timedelta
    passed: bool
    description: str

    def metadata(self) -> dict[str, float | int | str]:
        share = (lambda n: round(n / self.universe, 4) if self.universe else 1.0)
        return {
            "universe": self.universe,
            "answered_share": share(self.answered),
            "with_candles_share": share(self.with_candles),
            "closed_seconds": int(self.closed.total_seconds()),
        }


def coverage(
    with_candles: set[str], markets: list[str], stats: FetchStats, spec: Interval, start: pd.Timestamp, end: pd.Timestamp, now: pd.Timestamp, min_share: float
) -> Coverage:
    """Coverage of a partition: ``with_candles`` are the markets with a candle in it, stored or fetched.

    A market is *answered* when Upbit gave it a valid answer: candles, or an empty window (no trade).
    It is not when it was skipped (404, delisted) or every row it sent was quarantined. Within an
    hour a thin market may legitimately not trade, so for 1-minute candles "answered" is the test;
    only over a whole closed day must ``min_share`` of the universe have traded (a KRW market without
    a single trade in a day is halted or lost), and any closed window without one candle in the whole
    universe is wrong (KRW-BTC trades every minute).
    """
    quarantined_only = set(stats.quarantined["market"]) - with_candles
    answered = len(set(markets) - set(stats.skipped_markets) - quarantined_only)
    closed = max(pd.Timedelta(0), min(end, now.floor(spec.freq)) - start)
    total = len(markets)
    problems = []
    if total and answered < min_share * total:
        problems.append(f"only {answered}/{total} markets answered (skipped {len(stats.skipped_markets)}, all rows quarantined {len(quarantined_only)})")
    if total and closed >= _DAY and len(with_candles) < min_share * total:
        problems.append(f"only {len(with_candles)}/{total} markets have candles in a closed day")
    if total and closed >= spec.width and not with_candles:
        problems.append(f"no market has a single candle in {closed} of closed window")
    description = "; ".join(problems) or f"{answered}/{total} markets answered, {len(with_candles)} with candles"
    return Coverage(total, answered, len(with_candles), closed.to_pytimedelta(), not problems, description)


def stored_markets(postgres: PostgresResource, asset: str, start: pd.Timestamp, end: pd.Timestamp) -> set[str]:
    """Markets with a stored candle in ``[start, end)`` (none when the table does not exist yet)."""
    if not table_exists(postgres, asset):
        return set()
    sql = f"SELECT DISTINCT market FROM {postgres.table_name(asset)} WHERE candle_start >= $1 AND candle_start < $2"
    return set(postgres.read_frame(sql, (start, end))["market"])
