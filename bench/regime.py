"""Evidence for the regime policy: how do the recommendations fare in risk_off markets against the others?

Backfills the recommendations tick by tick over the datasets of bench/quality.py (the same loaders:
recorded Upbit candles, and optionally the simulated market), records each tick's regime by
market_status's rule, and reports per regime, at 1 h, 4 h and 24 h (net of 0.05 % fee each way):
the equal-weight universe's mean return, the picks' mean return, the picks' mean excess over the
universe with a 95 % moving-block bootstrap interval (blocks as long as the horizon), the mean rank
IC of the score, and how often a pick's target came before its stop. All figures in %.

Run: python bench/regime.py [--data-dir ../shared/data/upbit] [--step-minutes 60] [--simulated]
Ends with one JSON line: {"regimes": {regime: {ticks, picks, horizon: {...}}}, "command": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality

from dantaro_assets.recommendations import analysis
from dantaro_assets.recommendations.outcomes import (
    HORIZONS,
    first_hit,
    forward_returns,
    minute_grid,
    rank_ic,
)
from dantaro_assets.settings import load_settings


def backfill(data: quality.Dataset, step_minutes: int, min_turnover: float, floor: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every tick's picks and every eligible market's score, each row with the tick's regime."""
    ticks = pd.date_range(data.first_tick, data.last_tick, freq=f"{step_minutes}min")
    params = analysis.RecommendationParams(min_turnover, floor, ("v1",), top_n=data.top_n)
    picks, scored = [], []
    for _, day_ticks in pd.Series(ticks, index=ticks).groupby(ticks.floor("D")):
        inputs = quality.day_inputs(data, day_ticks)
        for as_of in day_ticks:
            regime = analysis.regime_at(inputs, as_of)
            tick = analysis.recommend_at(inputs, as_of, params, regime=regime)
            picks.append(tick.picks)
            if len(tick.scored):
                scores = tick.scored[["score_v1"]].rename(columns={"score_v1": "score"})
                scored.append(scores.assign(as_of=as_of, regime=regime).rename_axis("market").reset_index())
    return pd.concat(picks, ignore_index=True), pd.concat(scored, ignore_index=True)


def by_regime(data: quality.Dataset, picks: pd.DataFrame, scored: pd.DataFrame, step_minutes: int,
              rng: np.random.Generator) -> dict:
    grid = minute_grid(data.candles_1m)
    universe = pd.concat([scored.reset_index(drop=True), forward_returns(grid, scored.reset_index(drop=True))], axis=1)
    top = picks.merge(universe.drop(columns=["score", "regime"]), on=["as_of", "market"])
    hits = first_hit(grid, picks).set_index(picks.index)["first_hit"]
    out = {}
    for regime, tick_rows in universe.groupby("regime"):
        regime_picks = top[top["regime"] == regime]
        entry = {"ticks": int(tick_rows["as_of"].nunique()), "picks": len(regime_picks),
                 "ticks_with_picks": int(regime_picks["as_of"].nunique())}
        for label, horizon in HORIZONS.items():
            col = f"return_{label}"
            uni = tick_rows.dropna(subset=[col])
            uni_mean = uni.groupby("as_of")[col].mean()
            pick_mean = regime_picks.groupby("as_of")[col].mean()
            excess = (pick_mean - uni_mean).dropna()
            block = max(1, int(horizon / pd.Timedelta(minutes=step_minutes)))
            ic = rank_ic(uni, "score", col)
            entry[label] = {
                "universe_return": quality._pct(uni_mean.mean()),
                "pick_return": quality._pct(pick_mean.mean()),
                "excess_vs_universe": quality._pct(excess.mean()),
                "excess_ci": [quality._pct(x) for x in quality.block_bootstrap(excess.to_numpy(), block, rng)],
                "rank_ic": round(float(ic.mean()), 4) if len(ic) else None,
            }
        resolved = hits[picks["regime"] == regime].dropna()
        entry["target_first"] = round(float((resolved == "target").mean()), 4) if len(resolved) else None
        out[regime] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=quality.DATA_DIR)
    parser.add_argument("--step-minutes", type=int, default=60)
    parser.add_argument("--simulated", action="store_true", help="also the simulated market (100 markets, 7 days)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    settings = load_settings()
    rng = np.random.default_rng(args.seed)
    datasets = [quality.load_recorded(args.data_dir)]
    if args.simulated:
        datasets.append(quality.load_simulated(100, 7, args.seed, analysis.TOP_N))
    result = {}
    for data in datasets:
        started = time.perf_counter()
        picks, scored = backfill(data, args.step_minutes, settings.min_turnover_krw, settings.min_reward_risk)
        result[data.name] = by_regime(data, picks, scored, args.step_minutes, rng)
        print(f"\n{data.name}: {time.perf_counter() - started:.0f} s")
        print("| regime | ticks | picks | horizon | universe % | picks % | excess % [95 % CI] | rank IC |")
        print("|---|---|---|---|---|---|---|---|")
        for regime, entry in result[data.name].items():
            for label in HORIZONS:
                h = entry[label]
                print(f"| {regime} | {entry['ticks']} | {entry['picks']} | {label} | {h['universe_return']} | "
                      f"{h['pick_return']} | {h['excess_vs_universe']} {h['excess_ci']} | {h['rank_ic']} |")
    print(json.dumps({"regimes": result, "step_minutes": args.step_minutes, "min_reward_risk": settings.min_reward_risk,
                      "command": "python bench/regime.py " + " ".join(argv if argv is not None else sys.argv[1:])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
