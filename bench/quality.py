"""Evidence of quality: do the recommendations beat the market they pick from, do support levels hold?

Backfills the analyses tick by tick over (1) the recorded real Upbit candles in ../shared/data/upbit
and (2) the deterministic simulated market of dantaro_assets/replay/simulated.py, calling the pure
analysis functions directly (no Dagster, no database: the same code the assets run, minus the I/O),
then measures what happened next in the 1-minute candles:

- recommendations: net forward return (0.05 % fee each way, entry at the open of the minute at
  as_of) of the top picks at 1 h, 4 h and 24 h, minus the equal-weight eligible universe and minus
  random picks of the same size from the same universe (200 draws per tick); the mean rank IC
  (Spearman of score vs forward return over the whole eligible universe, per tick); and how often
  target or stop was reached first within 24 h (same minute = stop). Confidence intervals are 95 %
  moving-block bootstrap intervals over the per-tick series, blocks as long as the horizon, because
  ticks closer than the horizon share most of their forward window.
- support levels: a support zone [low, high] reported at a tick with the price above it is
  *touched* when a later 1-minute low reaches the zone top within 24 h. After the touch it *holds*
  if a high reaches zone top + 1 ATR (hourly ATR14 of the level) before a 1-minute close below
  zone bottom - 0.5 ATR (*break*; break also when both happen in the touch minute, or in one later
  minute). Neither within the 24 h: unresolved, left out. Hold rate = holds / (holds + breaks).
  Placebo levels: the same distance below the price, the same zone width and ATR (in % of price),
  placed at a random other tick of the same market (5 draws per level), judged by the same rule.
  Intervals: bootstrap over UTC days (levels of one day share price paths).

The recorded data has only 4 markets (KRW-BTC, ETH, XRP, SOL) in 1 m, so "top pick vs universe" is
the best of 4 vs the 4: a tiny cross-section, and no warning/caution flags were recorded for it.
Its 1 m and 1 h files carry no KRW turnover: value = volume x (open+high+low+close)/4 (the replay
server's derivation); hours from 2025-09-01 on and all days are rolled up from the recorded minutes.

Run: python bench/quality.py [--data-dir ../shared/data/upbit] [--sim-markets 100] [--sim-days 7]
     [--step-minutes 15] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.recommendations import analysis
from dantaro_assets.recommendations.outcomes import (
    HORIZONS,
    first_hit,
    forward_returns,
    minute_grid,
    rank_ic,
)
from dantaro_assets.replay.core import CAUTION_KEYS
from dantaro_assets.replay.simulated import SimulatedMarket
from dantaro_assets.settings import get_settings
from dantaro_assets.support_levels.analysis import compute_support_levels

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "upbit"
RANDOM_DRAWS = 200
PLACEBO_DRAWS = 5
BOOTSTRAP = 2000
HOLD_ATR, BREAK_ATR = 1.0, 0.5
WINDOW = 24 * 60


@dataclass
class Dataset:
    name: str
    candles_1m: pd.DataFrame
    candles_1h: pd.DataFrame
    candles_1d: pd.DataFrame
    markets: pd.DataFrame
    first_tick: pd.Timestamp
    last_tick: pd.Timestamp  # the last tick with 24 h of minutes after it
    top_n: int


def _daily_universe(markets: list[str], days: pd.DatetimeIndex) -> pd.DataFrame:
    """Every market listed every day without flags (none were recorded for this period)."""
    frame = pd.DataFrame([(d, m) for d in days for m in markets], columns=["day", "market"])
    return frame.assign(warning=False, **{flag: False for flag in analysis.CAUTION_FLAGS})


def load_recorded(data_dir: Path) -> Dataset:
    """The recorded candles with turnover derived; hours from the 1 m span and all days rolled up from minutes/hours."""
    m1 = pd.read_parquet(data_dir / "candles_1m.parquet").rename(columns={"candle_start_utc": "candle_start"})
    h1 = pd.read_parquet(data_dir / "candles_1h.parquet").rename(columns={"candle_start_utc": "candle_start"})
    for frame in (m1, h1):
        frame["value"] = frame["volume"] * frame[["open", "high", "low", "close"]].mean(axis=1)
    minutes_from = m1["candle_start"].min()
    hourly = pd.concat([h1[h1["candle_start"] < minutes_from], pit.resample_bars(m1, pit.HOUR)], ignore_index=True)
    hourly = hourly.sort_values(["market", "candle_start"], ignore_index=True)
    daily = pit.resample_bars(hourly, pit.DAY)
    days = pd.date_range(minutes_from.floor("D"), m1["candle_start"].max().ceil("D"), freq="D")
    return Dataset(
        name="recorded (4 markets)",
        candles_1m=m1[["market", "candle_start", *pit.OHLCV]],
        candles_1h=hourly,
        candles_1d=daily,
        markets=_daily_universe(sorted(m1["market"].unique()), days),
        first_tick=minutes_from + pd.Timedelta(days=1),
        last_tick=m1["candle_start"].max() + pit.MINUTE - pd.Timedelta(days=1),
        top_n=1,
    )


def _sim_frame(sim: SimulatedMarket, market: str, unit: int, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    count = int((end - start) / pd.Timedelta(minutes=unit))
    now = end.timestamp() + 86_400  # the whole range is in the past: no forming candle
    c = sim.candles(market, unit, end.timestamp(), count, now)
    keep = c.start >= start.timestamp()
    return pd.DataFrame({
        "market": market, "candle_start": pd.to_datetime(c.start[keep], unit="s", utc=True),
        "open": c.open[keep], "high": c.high[keep], "low": c.low[keep], "close": c.close[keep],
        "volume": c.volume[keep], "value": c.value[keep],
    })


def load_simulated(n_markets: int, days: int, seed: int, top_n: int) -> Dataset:
    """``days`` of simulated minutes from 2025-09-01 (hours and days from 40 days earlier), with the weekly flags."""
    sim = SimulatedMarket(n_markets=n_markets, seed=seed)
    start = pd.Timestamp("2025-09-01", tz="UTC")
    end = start + pd.Timedelta(days=days)
    history = start - pd.Timedelta(days=40)
    names = [spec.info.market for spec in sim.specs]
    m1 = pd.concat([_sim_frame(sim, m, 1, start, end) for m in names], ignore_index=True)
    h1 = pd.concat([_sim_frame(sim, m, 60, history, end) for m in names], ignore_index=True)
    d1 = pd.concat([_sim_frame(sim, m, 1440, history, end) for m in names], ignore_index=True)
    day_index = pd.date_range(start, end, freq="D", inclusive="left")
    rows = []
    for day in day_index:
        for info in sim.markets(day.timestamp() + 3600):
            rows.append({"day": day, "market": info.market, "warning": info.warning,
                         **{f"caution_{k.lower()}": v for k, v in zip(CAUTION_KEYS, info.caution)}})
    return Dataset(
        name=f"simulated ({n_markets} markets, {days} days)",
        candles_1m=m1, candles_1h=h1, candles_1d=d1, markets=pd.DataFrame(rows),
        first_tick=start + pd.Timedelta(days=1), last_tick=end - pd.Timedelta(days=1), top_n=top_n,
    )


def backfill(data: Dataset, step_minutes: int, min_turnover: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, float]:
    """Every tick's top picks, every eligible market's score, and the support levels; seconds per tick."""
    ticks = pd.date_range(data.first_tick, data.last_tick, freq=f"{step_minutes}min")
    picks, scored, levels = [], [], []

    def capture_levels(hourly, daily, price, as_of):
        found = compute_support_levels(hourly, daily, price, as_of)
        levels.append(found)
        return found

    started = time.perf_counter()
    for day, day_ticks in pd.Series(ticks, index=ticks).groupby(ticks.floor("D")):
        inputs = analysis.TickInputs.prepare(data.candles_1m, data.candles_1h, data.candles_1d, data.markets,
                                             day_ticks.iloc[0], day_ticks.iloc[-1])
        for as_of in day_ticks:
            top, every, _ = analysis.recommend_at(inputs, as_of, capture_levels, min_turnover_krw=min_turnover, top_n=data.top_n)
            picks.append(top)
            if len(every):
                scored.append(every[["score"]].assign(as_of=as_of).rename_axis("market").reset_index())
    seconds_per_tick = (time.perf_counter() - started) / max(len(ticks), 1)
    return (pd.concat(picks, ignore_index=True), pd.concat(scored, ignore_index=True),
            pd.concat([lv for lv in levels if len(lv)], ignore_index=True), seconds_per_tick)


def block_bootstrap(series: np.ndarray, block: int, rng: np.random.Generator) -> tuple[float, float]:
    """95 % moving-block bootstrap interval of the mean of a serially correlated series."""
    values = series[np.isfinite(series)]
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    block = max(1, min(block, n))
    blocks_needed = int(np.ceil(n / block))
    starts = rng.integers(0, n - block + 1, size=(BOOTSTRAP, blocks_needed))
    index = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(BOOTSTRAP, -1)[:, :n]
    means = values[index].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def evaluate_recommendations(data: Dataset, picks: pd.DataFrame, scored: pd.DataFrame, step_minutes: int,
                             rng: np.random.Generator) -> dict:
    grid = minute_grid(data.candles_1m)
    universe = scored.reset_index(drop=True)
    universe = pd.concat([universe, forward_returns(grid, universe)], axis=1)
    top = picks.merge(universe[["as_of", "market", *[f"return_{h}" for h in HORIZONS]]], on=["as_of", "market"])
    out: dict = {"ticks": int(picks["as_of"].nunique()), "picks_per_tick": data.top_n,
                 "mean_universe_size": round(float(universe.groupby("as_of").size().mean()), 1)}
    for label, horizon in HORIZONS.items():
        col = f"return_{label}"
        pick_mean = top.groupby("as_of")[col].mean()
        uni = universe.dropna(subset=[col])
        uni_mean = uni.groupby("as_of")[col].mean()
        random_mean = _random_picks_mean(uni, col, data.top_n, rng)
        block = max(1, int(horizon / pd.Timedelta(minutes=step_minutes)))
        vs_universe = (pick_mean - uni_mean).dropna()
        vs_random = (pick_mean - random_mean).dropna()
        ic = rank_ic(uni, "score", col)
        out[label] = {
            "pick_return": _pct(pick_mean.mean()),
            "universe_return": _pct(uni_mean.mean()),
            "excess_vs_universe": _pct(vs_universe.mean()),
            "excess_vs_universe_ci": [_pct(x) for x in block_bootstrap(vs_universe.to_numpy(), block, rng)],
            "excess_vs_random": _pct(vs_random.mean()),
            "excess_vs_random_ci": [_pct(x) for x in block_bootstrap(vs_random.to_numpy(), block, rng)],
            "rank_ic": round(float(ic.mean()), 4) if len(ic) else None,
            "rank_ic_ci": [round(x, 4) for x in block_bootstrap(ic.to_numpy(), block, rng)] if len(ic) > 1 else None,
            "ticks": len(vs_universe),
        }
    hits = first_hit(grid, picks)["first_hit"].dropna()
    out["first_hit"] = {k: round(float((hits == k).mean()), 4) for k in ("target", "stop", "neither")} | {
        "n": len(hits),
        "mean_target_pct": _pct((picks["target"] / picks["entry"] - 1.0).mean()),
        "mean_stop_pct": _pct((1.0 - picks["stop"] / picks["entry"]).mean()),
    }
    return out


def _random_picks_mean(universe: pd.DataFrame, col: str, k: int, rng: np.random.Generator) -> pd.Series:
    """Per tick, the mean over RANDOM_DRAWS of the mean return of k markets drawn without replacement."""
    means = {}
    for as_of, group in universe.groupby("as_of"):
        returns = group[col].to_numpy()
        size = min(k, len(returns))
        draws = rng.random((RANDOM_DRAWS, len(returns))).argsort(axis=1)[:, :size]
        means[as_of] = returns[draws].mean(axis=1).mean()
    return pd.Series(means)


def _pct(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(100.0 * float(value), 4)


def judge_levels(grid, as_of: pd.Series, market: pd.Series, zone_low: np.ndarray, zone_high: np.ndarray,
                 atr: np.ndarray) -> np.ndarray:
    """'hold', 'break', 'untouched' or 'unresolved' per support zone (see the module docstring)."""
    rows, cols = grid.row(as_of), grid.column(market)
    result = np.full(len(rows), "untouched", dtype=object)
    offsets = np.arange(WINDOW)
    pad = lambda a: np.vstack([a, np.full((WINDOW, a.shape[1]), np.nan)])
    high, low, close = pad(grid.high), pad(grid.low), pad(grid.close)
    for lo in range(0, len(rows), 2048):
        part = slice(lo, lo + 2048)
        idx = rows[part][:, None] + offsets[None, :]
        col = cols[part][:, None]
        with np.errstate(invalid="ignore"):
            touched = low[idx, col] <= zone_high[part, None]
            broke = close[idx, col] < (zone_low[part] - BREAK_ATR * atr[part])[:, None]
            held = high[idx, col] >= (zone_high[part] + HOLD_ATR * atr[part])[:, None]
        touch_at = np.where(touched.any(axis=1), touched.argmax(axis=1), WINDOW)
        after = offsets[None, :] >= touch_at[:, None]
        first_break = np.where((broke & after).any(axis=1), (broke & after).argmax(axis=1), WINDOW)
        hold_after = held & (offsets[None, :] > touch_at[:, None])
        first_hold = np.where(hold_after.any(axis=1), hold_after.argmax(axis=1), WINDOW)
        verdict = np.where(first_break <= first_hold, "break", "hold")
        verdict = np.where((first_break == WINDOW) & (first_hold == WINDOW), "unresolved", verdict)
        result[part] = np.where(touch_at == WINDOW, "untouched", verdict)
    return result


def evaluate_levels(data: Dataset, levels: pd.DataFrame, rng: np.random.Generator) -> dict:
    grid = minute_grid(data.candles_1m)
    supports = levels[(levels["side"] == "support") & (levels["zone_high"] < levels["price"])].reset_index(drop=True)
    real = judge_levels(grid, supports["as_of"], supports["market"], supports["zone_low"].to_numpy(),
                        supports["zone_high"].to_numpy(), supports["atr"].to_numpy())
    depth = 1.0 - supports["zone_high"] / supports["price"]
    width = (supports["zone_high"] - supports["zone_low"]) / supports["price"]
    atr_pct = supports["atr"] / supports["price"]
    placebo = supports.loc[supports.index.repeat(PLACEBO_DRAWS)].reset_index(drop=True)
    tick_pool = supports[["market", "as_of"]].drop_duplicates()
    pools = tick_pool.groupby("market")["as_of"].apply(lambda s: s.astype("int64").to_numpy())
    shifted = np.empty(len(placebo), dtype=np.int64)
    for market, index in placebo.groupby("market").groups.items():
        shifted[np.asarray(index)] = rng.choice(pools[market], size=len(index))
    placebo["as_of"] = pd.to_datetime(shifted, utc=True)
    price = grid.price_at(placebo["as_of"], placebo["market"])
    repeat = lambda s: np.repeat(s.to_numpy(), PLACEBO_DRAWS)
    top = price * (1.0 - repeat(depth))
    fake = judge_levels(grid, placebo["as_of"], placebo["market"], top - price * repeat(width), top, price * repeat(atr_pct))
    return {
        "support_zones": len(supports),
        "real": _hold_stats(real, supports["as_of"]),
        "placebo": _hold_stats(fake, placebo["as_of"]),
        "difference_ci": _hold_difference_ci(real, supports["as_of"], fake, placebo["as_of"], rng),
        "mean_depth_pct": round(100.0 * float(depth.mean()), 3),
    }


def _hold_stats(verdicts: np.ndarray, as_of: pd.Series) -> dict:
    counts = pd.Series(verdicts).value_counts()
    holds, breaks = int(counts.get("hold", 0)), int(counts.get("break", 0))
    return {"levels": len(verdicts), "touch_rate": round(1.0 - counts.get("untouched", 0) / max(len(verdicts), 1), 4),
            "holds": holds, "breaks": breaks, "unresolved": int(counts.get("unresolved", 0)),
            "hold_rate": round(holds / (holds + breaks), 4) if holds + breaks else None}


def _hold_difference_ci(real, real_as_of, fake, fake_as_of, rng) -> list[float | None]:
    """95 % bootstrap interval of hold rate (real - placebo), resampling UTC days of the tick."""
    def per_day(verdicts, as_of):
        frame = pd.DataFrame({"day": pd.DatetimeIndex(as_of).floor("D"), "hold": verdicts == "hold", "break": verdicts == "break"})
        return frame.groupby("day")[["hold", "break"]].sum()
    days = per_day(real, real_as_of).join(per_day(fake, fake_as_of), lsuffix="_real", rsuffix="_fake", how="outer").fillna(0)
    if len(days) < 2:
        return [None, None]
    values = days.to_numpy()
    draws = values[rng.integers(0, len(days), size=(BOOTSTRAP, len(days)))].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = draws[:, 0] / (draws[:, 0] + draws[:, 1]) - draws[:, 2] / (draws[:, 2] + draws[:, 3])
    diff = diff[np.isfinite(diff)]
    return [round(float(np.quantile(diff, q)), 4) for q in (0.025, 0.975)]


def report(data: Dataset, recs: dict, levels: dict, seconds_per_tick: float) -> None:
    print(f"\n## {data.name}: ticks {data.first_tick:%Y-%m-%d %H:%M} .. {data.last_tick:%Y-%m-%d %H:%M} UTC, "
          f"top {data.top_n} pick(s) of ~{recs['mean_universe_size']} eligible, {seconds_per_tick * 1000:.0f} ms/tick")
    rows = []
    for label in HORIZONS:
        r = recs[label]
        rows.append({
            "horizon": label, "ticks": r["ticks"], "pick %": r["pick_return"], "universe %": r["universe_return"],
            "excess vs universe % [95% CI]": f"{r['excess_vs_universe']} {r['excess_vs_universe_ci']}",
            "excess vs random % [95% CI]": f"{r['excess_vs_random']} {r['excess_vs_random_ci']}",
            "rank IC [95% CI]": f"{r['rank_ic']} {r['rank_ic_ci']}",
        })
    print(pd.DataFrame(rows).to_markdown(index=False))
    hit = recs["first_hit"]
    print(f"\nfirst within 24 h (n={hit['n']}): target {hit['target']:.1%}, stop {hit['stop']:.1%}, neither {hit['neither']:.1%}"
          f" (target {hit['mean_target_pct']} % above entry, stop {hit['mean_stop_pct']} % below, on average)")
    table = pd.DataFrame([{"zones": name, **levels[name]} for name in ("real", "placebo")])
    print(f"\nsupport zones below the price: {levels['support_zones']} (mean depth {levels['mean_depth_pct']} % below)")
    print(table.to_markdown(index=False))
    print(f"hold rate real - placebo, 95% CI (bootstrap over days): {levels['difference_ci']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--sim-markets", type=int, default=100)
    parser.add_argument("--sim-days", type=int, default=7)
    parser.add_argument("--sim-top", type=int, default=analysis.TOP_N)
    parser.add_argument("--step-minutes", type=int, default=15, help="tick spacing (the asset's cadence is 5 min)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-recorded", action="store_true")
    args = parser.parse_args(argv)
    print("command: python bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv))
    min_turnover = get_settings().min_turnover_krw
    rng = np.random.default_rng(args.seed)
    datasets = []
    if not args.skip_recorded and (args.data_dir / "candles_1m.parquet").exists():
        datasets.append(load_recorded(args.data_dir))
    elif not args.skip_recorded:
        print(f"recorded data not found in {args.data_dir}: skipped")
    datasets.append(load_simulated(args.sim_markets, args.sim_days, args.seed, args.sim_top))
    summary = {"step_minutes": args.step_minutes, "min_turnover_krw": min_turnover, "fee_each_way": 0.0005}
    for data in datasets:
        picks, scored, levels, per_tick = backfill(data, args.step_minutes, min_turnover)
        recs = evaluate_recommendations(data, picks, scored, args.step_minutes, rng)
        held = evaluate_levels(data, levels, rng)
        report(data, recs, held, per_tick)
        summary[data.name] = {"recommendations": recs, "support_levels": held, "seconds_per_tick": round(per_tick, 4)}
    print("\n" + json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
