"""What happened after each recommendation: forward returns and whether target or stop came first.

Pure functions over DataFrames (no Dagster). Horizons the data does not reach yet are null, so a partition
materialised early is filled in on a later run (docs/analyses.md, "Recommendation outcomes").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dantaro_assets.lib.point_in_time import MARKET, MINUTE, START

UPBIT_FEE = 0.0005
HORIZONS: dict[str, pd.Timedelta] = {"1h": pd.Timedelta(hours=1), "4h": pd.Timedelta(hours=4), "24h": pd.Timedelta(hours=24)}
HIT_WINDOW = pd.Timedelta(hours=24)
_CHUNK = 2048  # recommendations scanned at once for target/stop hits (x 1440 minutes of floats)


@dataclass(frozen=True)
class MinuteGrid:
    """Wide, gap-filled minute prices: rows are minutes from ``start``, columns are markets."""

    start: pd.Timestamp
    markets: pd.Index
    open: np.ndarray  # gap minutes hold the previous close
    high: np.ndarray  # gap minutes are NaN: nothing traded, nothing touched
    low: np.ndarray
    close: np.ndarray  # gap minutes carry the previous close

    @property
    def end(self) -> pd.Timestamp:
        """Exclusive end of the grid: the candle data is complete up to here."""
        return self.start + len(self.open) * MINUTE

    def row(self, times: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        return ((pd.DatetimeIndex(times) - self.start) // MINUTE).to_numpy(dtype=np.int64)

    def column(self, markets: pd.Series) -> np.ndarray:
        return self.markets.get_indexer(pd.Index(markets))

    def price_at(self, times: pd.Series | pd.DatetimeIndex, markets: pd.Series) -> np.ndarray:
        """Open of the minute starting at each time (previous close if nothing traded); NaN past the data."""
        rows, cols = self.row(times), self.column(markets)
        ok = (rows >= 0) & (rows < len(self.open)) & (cols >= 0)
        out = np.full(len(rows), np.nan)
        out[ok] = self.open[rows[ok], cols[ok]]
        # the price at the grid's exclusive end is the last close: the open of a minute nobody has seen yet
        at_end = (rows == len(self.open)) & (cols >= 0)
        out[at_end] = self.close[-1, cols[at_end]]
        return out


def minute_grid(candles_1m: pd.DataFrame, previous_close: pd.Series | None = None) -> MinuteGrid:
    """Pivot 1-minute candles to a gap-filled grid from the first candle to the end of the last one.

    ``previous_close`` (index market) is the price each market carries into the grid's first minute
    (e.g. its last hourly close before the candles read), so a market quiet since before them has a price.
    """
    if candles_1m.empty:
        raise ValueError("no 1-minute candles to evaluate outcomes against")
    start = candles_1m[START].min()
    end = candles_1m[START].max() + MINUTE
    minutes = pd.date_range(start, end, freq="1min", inclusive="left")
    wide = candles_1m.pivot(index=START, columns=MARKET)
    markets = wide["close"].columns
    if previous_close is not None:
        markets = markets.union(previous_close.index)
    carried = (previous_close if previous_close is not None else pd.Series(dtype=float)).reindex(markets)
    close = wide["close"].reindex(index=minutes, columns=markets)
    close.iloc[0] = close.iloc[0].fillna(carried)
    close = close.ffill()
    opens = wide["open"].reindex(index=minutes, columns=markets).fillna(close.shift(1).fillna(carried))
    return MinuteGrid(
        start=start,
        markets=markets,
        open=opens.to_numpy(dtype=float),
        high=wide["high"].reindex(index=minutes, columns=markets).to_numpy(dtype=float),
        low=wide["low"].reindex(index=minutes, columns=markets).to_numpy(dtype=float),
        close=close.to_numpy(dtype=float),
    )


def net_return(entry: np.ndarray, exit_: np.ndarray, fee: float = UPBIT_FEE) -> np.ndarray:
    """Return of buying at ``entry`` and selling at ``exit_`` after paying ``fee`` on each leg."""
    return exit_ * (1.0 - fee) / (entry * (1.0 + fee)) - 1.0


def forward_returns(grid: MinuteGrid, picks: pd.DataFrame, fee: float = UPBIT_FEE) -> pd.DataFrame:
    """Entry price and net forward return per horizon for rows with ``as_of`` and ``market``."""
    entry = grid.price_at(picks["as_of"], picks["market"])
    out = pd.DataFrame({"entry_price": entry}, index=picks.index)
    for label, horizon in HORIZONS.items():
        exit_at = pd.DatetimeIndex(picks["as_of"]) + horizon
        exit_price = grid.price_at(exit_at, picks["market"])
        exit_price[np.asarray(exit_at > grid.end)] = np.nan
        out[f"return_{label}"] = net_return(entry, exit_price, fee)
    return out


def universe_returns(grid: MinuteGrid, universe: pd.DataFrame, fee: float = UPBIT_FEE) -> pd.DataFrame:
    """Equal-weight mean net return of the eligible universe per ``as_of`` and horizon."""
    returns = forward_returns(grid, universe, fee)
    columns = [f"return_{label}" for label in HORIZONS]
    means = returns[columns].groupby(universe["as_of"].to_numpy()).mean()
    means.index.name = "as_of"
    return means.rename(columns={c: c.replace("return_", "universe_return_") for c in columns})


def first_hit(grid: MinuteGrid, picks: pd.DataFrame, within: pd.Timedelta = HIT_WINDOW) -> pd.DataFrame:
    """Which of target and stop the price reached first within ``within`` (24 h) of ``as_of``.

    'stop' also when both are reached in the same minute (the order inside a candle is unknown, so
    the conservative reading wins); 'neither' only once the whole window is in the data, null before.
    """
    window = int(within / MINUTE)
    rows, cols = grid.row(picks["as_of"]), grid.column(picks["market"])
    target, stop = picks["target"].to_numpy(float), picks["stop"].to_numpy(float)
    outcome = np.full(len(picks), None, dtype=object)
    minutes = np.full(len(picks), np.nan)
    padded_high = np.vstack([grid.high, np.full((window, grid.high.shape[1]), np.nan)])
    padded_low = np.vstack([grid.low, np.full((window, grid.low.shape[1]), np.nan)])
    offsets = np.arange(window)
    complete = np.asarray(pd.DatetimeIndex(picks["as_of"]) + within <= grid.end)
    for lo in range(0, len(picks), _CHUNK):
        part = slice(lo, lo + _CHUNK)
        valid = (cols[part] >= 0) & (rows[part] >= 0)
        idx = np.clip(rows[part], 0, None)[:, None] + offsets[None, :]
        col = np.clip(cols[part], 0, None)[:, None]
        with np.errstate(invalid="ignore"):
            up = padded_high[idx, col] >= target[part, None]
            down = padded_low[idx, col] <= stop[part, None]
        any_hit = (up | down) & valid[:, None]
        hit = any_hit.any(axis=1)
        first = np.where(hit, any_hit.argmax(axis=1), -1)
        ix = np.arange(len(first))
        stop_first = hit & down[ix, first]
        chunk_outcome = np.where(stop_first, "stop", np.where(hit, "target", None)).astype(object)
        chunk_outcome[~hit & complete[part] & valid] = "neither"
        outcome[part] = chunk_outcome
        minutes[part] = np.where(hit, first + 1, np.nan)
    return pd.DataFrame({"first_hit": outcome, "minutes_to_hit": minutes}, index=picks.index)


def compute_outcomes(
    recommendations: pd.DataFrame, candles_1m: pd.DataFrame, universe: pd.DataFrame, fee: float = UPBIT_FEE,
    previous_close: pd.Series | None = None,
) -> pd.DataFrame:
    """One row per recommendation: net forward returns, the universe's at the same times, excess, first hit.

    ``universe`` lists the eligible markets per tick (columns as_of, market), the same universe the
    recommendations were ranked in; ``candles_1m`` reach from before the first ``as_of`` to as far
    ahead as is known, and ``previous_close`` is the price a market quiet since before them carries in
    (``minute_grid``).
    """
    recs = recommendations[["as_of", "scorer", "rank", "market", "score", "entry", "target", "stop"]].reset_index(drop=True)
    if recs.empty:
        return _empty_outcomes()
    grid = minute_grid(candles_1m, previous_close)
    out = pd.concat([recs, forward_returns(grid, recs, fee), first_hit(grid, recs)], axis=1)
    bench = universe_returns(grid, universe, fee)
    out = out.merge(bench, left_on="as_of", right_index=True, how="left")
    for label in HORIZONS:
        out[f"excess_{label}"] = out[f"return_{label}"] - out[f"universe_return_{label}"]
    return out[OUTCOME_COLUMNS].sort_values(["as_of", "scorer", "rank"], ignore_index=True)


OUTCOME_COLUMNS = [
    "as_of", "scorer", "rank", "market", "score", "entry", "target", "stop", "entry_price",
    *[f"return_{h}" for h in HORIZONS], *[f"universe_return_{h}" for h in HORIZONS],
    *[f"excess_{h}" for h in HORIZONS], "first_hit", "minutes_to_hit",
]  # fmt: skip


def _empty_outcomes() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in OUTCOME_COLUMNS})
    frame["as_of"] = pd.Series(dtype="datetime64[ns, UTC]")
    frame["rank"] = pd.Series(dtype="int64")
    frame["market"] = pd.Series(dtype=object)
    frame["scorer"] = pd.Series(dtype=object)
    frame["first_hit"] = pd.Series(dtype=object)
    return frame


def rank_ic(frame: pd.DataFrame, score: str, outcome: str, min_names: int = 3) -> pd.Series:
    """Spearman correlation between ``score`` and ``outcome`` within each ``as_of`` (ticks with too few names dropped)."""
    data = frame[["as_of", score, outcome]].dropna()
    counts = data.groupby("as_of")[score].transform("size")
    data = data[counts >= min_names]
    if data.empty:
        return pd.Series(dtype=float)
    ranks = data.groupby("as_of")[[score, outcome]].rank()
    ranks["as_of"] = data["as_of"]
    with np.errstate(invalid="ignore", divide="ignore"):  # a tick where every name scores the same has no IC: dropped
        return ranks.groupby("as_of").apply(lambda g: g[score].corr(g[outcome]), include_groups=False).dropna()


def summarise_outcomes(outcomes: pd.DataFrame) -> dict[str, float | int | None]:
    """Hit rate, mean return and excess, and mean rank IC (among the picks) per horizon of one scorer's outcomes."""
    summary: dict[str, float | int | None] = {"recommendations": len(outcomes), "ticks": outcomes["as_of"].nunique()}
    resolved = outcomes["first_hit"].dropna()
    decided = resolved[resolved != "neither"]
    summary["resolved"] = len(resolved)
    summary["target_hit_rate"] = _round(float((resolved == "target").mean())) if len(resolved) else None
    summary["target_before_stop_rate"] = _round(float((decided == "target").mean())) if len(decided) else None
    for label in HORIZONS:
        excess = outcomes[f"excess_{label}"].dropna()
        ic = rank_ic(outcomes, "score", f"return_{label}")
        summary[f"evaluated_{label}"] = len(excess)
        summary[f"mean_return_{label}"] = _round(float(outcomes[f"return_{label}"].mean())) if len(excess) else None
        summary[f"mean_excess_{label}"] = _round(float(excess.mean())) if len(excess) else None
        summary[f"rank_ic_{label}"] = _round(float(ic.mean())) if len(ic) else None
    return summary


def _round(value: float) -> float:
    return round(value, 6)


BOOTSTRAP = 2000
SCORECARD_WINDOWS: dict[str, pd.Timedelta] = {"7d": pd.Timedelta(days=7), "30d": pd.Timedelta(days=30)}
SCORECARD_COLUMNS = [
    "window", "scorer", "horizon", "picks", "ticks", "hit_rate", "mean_excess", "excess_ci_low", "excess_ci_high",
    "rank_ic", "target_before_stop",
]  # fmt: skip


def block_bootstrap(series: np.ndarray, block: int, rng: np.random.Generator, draws: int = BOOTSTRAP) -> tuple[float, float]:
    """95 % moving-block bootstrap interval of the mean of a serially correlated series (NaN when under 2 values)."""
    values = series[np.isfinite(series)]
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    block = max(1, min(block, n))
    blocks_needed = int(np.ceil(n / block))
    starts = rng.integers(0, n - block + 1, size=(draws, blocks_needed))
    index = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(draws, -1)[:, :n]
    means = values[index].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def scorecard(outcomes: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """How every scorer's picks did over the last 7 and 30 days, per horizon: one row per window, scorer and horizon.

    The windows end at the newest graded tick (``as_of > newest - window``), so the card of a replayed
    or recorded period reads the same as a live one.

    ``hit_rate`` is the share of graded picks that beat the equal-weight universe (net of fees),
    ``mean_excess`` their mean excess return with a 95 % moving-block bootstrap interval: picks are
    averaged per tick, ticks per hour (ticks of one hour share most of their forward window), and the
    hours resampled in blocks as long as the horizon. ``rank_ic`` is the mean Spearman correlation of
    score and return among a tick's picks; ``target_before_stop`` the share of picks whose 24 h race
    was decided that reached the target first. A seeded generator keeps the intervals stable.
    """
    rng = np.random.default_rng(seed)
    rows = []
    newest = outcomes["as_of"].max()
    for window, span in SCORECARD_WINDOWS.items():
        recent = outcomes[outcomes["as_of"] > newest - span]
        for scorer, picks in recent.groupby("scorer", sort=True):
            decided = picks["first_hit"].dropna()
            decided = decided[decided != "neither"]
            target_first = _round(float((decided == "target").mean())) if len(decided) else None
            for label, horizon in HORIZONS.items():
                graded = picks.dropna(subset=[f"excess_{label}"])
                per_tick = graded.groupby("as_of")[f"excess_{label}"].mean()
                per_hour = per_tick.groupby(per_tick.index.floor("h")).mean()
                low, high = block_bootstrap(per_hour.to_numpy(), max(1, int(horizon / pd.Timedelta(hours=1))), rng)
                ic = rank_ic(graded, "score", f"return_{label}")
                rows.append({
                    "window": window, "scorer": scorer, "horizon": label, "picks": len(graded), "ticks": len(per_tick),
                    "hit_rate": _round(float((graded[f"excess_{label}"] > 0).mean())) if len(graded) else None,
                    "mean_excess": _round(float(graded[f"excess_{label}"].mean())) if len(graded) else None,
                    "excess_ci_low": _finite(low), "excess_ci_high": _finite(high),
                    "rank_ic": _round(float(ic.mean())) if len(ic) else None,
                    "target_before_stop": target_first,
                })
    return pd.DataFrame(rows, columns=SCORECARD_COLUMNS)


def _finite(value: float) -> float | None:
    return _round(value) if np.isfinite(value) else None
