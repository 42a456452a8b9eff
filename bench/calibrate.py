"""The plans' calibration from the recorded candles: each horizon's reach and the table of target-first chances.

1. Reach: the maximum favourable excursion (the highest high of the next ``h`` hourly bars over the
   close, in units of the hourly ATR14 at that close) of every hourly bar of the recorded 1-hour candles
   before the split, per horizon of outcomes.HORIZONS; its 5 %..95 % quantiles.
2. Plans: the recommendations backfilled tick by tick (bench/quality.py's backfill, the pure functions)
   with that reach (and, for the record, how many plans each horizon's reach would leave placeable):
   every placeable plan (before the expected-return filter), once, and each scorer's top N of them (the
   list it would rank from). Graded on the 1-minute candles within the plan's
   horizon from the tick's minute: target first, stop first (both in one minute: stop), or neither, sold
   at the price at the horizon's end (its return in ATR units).
3. Fit: the plans whose horizon ended before ``--split`` are counted into the table
   (recommendations/calibration.py: four levels, each shrunk toward its parent with ``prior_strength``
   pseudo-plans, the strength of ``PRIOR_STRENGTHS`` that predicted best on the fit period's last third when
   counted on its first two); ``--write`` ships it as dantaro_assets/recommendations/calibration.json.
   Held out: the plans from the split on, predicted by that table (bench/quality.py's ``reliability``).

Run: python bench/calibrate.py [--data-dir ../shared/data/upbit] [--step-minutes 60] [--split 2025-09-22] [--write]
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality

from dantaro_assets.lib import indicators
from dantaro_assets.recommendations.calibration import (
    CALIBRATION_FILE,
    CELL_COLUMNS,
    OUTCOMES,
    Calibration,
    count_cells,
    with_cells,
)
from dantaro_assets.recommendations.outcomes import HORIZONS, minute_grid
from dantaro_assets.settings import load_settings

SPLIT = pd.Timestamp("2025-09-22", tz="UTC")
TARGET_ATR_EDGES = (2.0,)  # target nearer than 2 ATR, or farther
STOP_ATR_EDGES = (1.0,)  # stop nearer than 1 ATR, or farther
PRIOR_STRENGTHS = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)  # pseudo-plans of the parent's rates a cell's count against
QUANTILES = [round(q, 2) for q in np.arange(0.05, 0.96, 0.05)]


def measure_reach(hourly: pd.DataFrame, before: pd.Timestamp) -> tuple[dict[int, dict[str, list[float]]], dict]:
    """MFE quantiles in ATR units per horizon over the hourly candles before ``before``, and how many bars each."""
    bars = indicators.sort_candles(hourly[hourly["candle_start"] < before]).reset_index(drop=True)
    atr = indicators.atr(bars, 14).to_numpy()
    close, high = bars["close"].to_numpy(), bars["high"].to_numpy()
    starts = indicators.group_starts(bars["market"])
    reach, counts = {}, {}
    for label, span in HORIZONS.items():
        hours = int(span / pd.Timedelta(hours=1))
        excursions = []
        for lo, hi in zip(starts[:-1], starts[1:]):
            ahead = np.lib.stride_tricks.sliding_window_view(high[lo + 1 : hi], hours) if hi - lo > hours else np.empty((0, hours))
            best = ahead.max(axis=1)
            at = slice(lo, lo + len(best))
            excursions.append((best / close[at] - 1.0) / (atr[at] / close[at]))
        values = np.concatenate(excursions)
        values = values[np.isfinite(values)]
        reach[hours] = {"quantile": QUANTILES, "mfe_atr": [round(float(v), 4) for v in np.quantile(values, QUANTILES)]}
        counts[label] = len(values)
    return reach, counts


def provisional(reach: dict[int, dict[str, list[float]]]) -> Calibration:
    """The reach with a flat table: enough for the backfill to make plans (their chances are fitted after)."""
    cells = pd.DataFrame([{"level": 0, "horizon": h, "target_bin": -1, "stop_bin": -1, "regime": "", "scorer": "", "n": 3,
                           "target": 1, "stop": 1, "neither": 1, "neither_return_atr": 0.0} for h in reach], columns=CELL_COLUMNS)
    return Calibration(cells, TARGET_ATR_EDGES, STOP_ATR_EDGES, PRIOR_STRENGTHS[0], reach)


def _ended(frame: pd.DataFrame, split: pd.Timestamp) -> pd.DataFrame:
    return frame[(frame["as_of"] + pd.to_timedelta(frame["horizon"], unit="h") <= split) & frame["outcome"].notna()]


def fit(plans: pd.DataFrame, picks: pd.DataFrame, base: Calibration, split: pd.Timestamp, fitted: dict,
        prior_strength: float | None = None) -> Calibration:
    """The table counted from the graded plans whose horizon ended before ``split``."""
    counted = with_cells(base, count_cells(base, _ended(plans, split), _ended(picks, split)), fitted)
    return counted if prior_strength is None else replace(counted, prior_strength=prior_strength)


def choose_prior_strength(plans: pd.DataFrame, picks: pd.DataFrame, base: Calibration, split: pd.Timestamp) -> tuple[float, dict]:
    """The shrinkage that predicts best inside the fit period: counted on its first two thirds, the Brier score of
    the scorers' lists on the last third (whose plans start after the first part's last horizon ended)."""
    fit_plans = _ended(plans, split)
    inner = fit_plans["as_of"].min() + (split - fit_plans["as_of"].min()) * 2 / 3
    later = _ended(picks, split)
    later = later[later["as_of"] >= inner]
    hit = (later["outcome"] == "target").to_numpy(float)
    scores = {}
    for strength in PRIOR_STRENGTHS:
        table = fit(plans, picks, base, inner, {}, strength)
        scores[strength] = round(float(np.mean((table.rates(later.reset_index(drop=True))["p_target"].to_numpy() - hit) ** 2)), 5)
    return min(scores, key=scores.get), scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=quality.DATA_DIR)
    parser.add_argument("--step-minutes", type=int, default=60)
    parser.add_argument("--split", type=pd.Timestamp, default=SPLIT)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write", action="store_true", help=f"ship the fitted table as {CALIBRATION_FILE.name}")
    args = parser.parse_args(argv)
    command = "python bench/calibrate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: {command}")
    split = args.split.tz_localize("UTC") if args.split.tzinfo is None else args.split
    settings = load_settings()
    rng = np.random.default_rng(args.seed)
    data = quality.load_recorded(args.data_dir)
    hours = pd.read_parquet(args.data_dir / "candles_1h.parquet").rename(columns={"candle_start_utc": "candle_start"})
    reach, reach_bars = measure_reach(hours, split)
    print("\nreach: MFE over the horizon in ATR units (recorded 1-hour candles before the split), quantiles")
    print(pd.DataFrame({f"{h} h": table["mfe_atr"] for h, table in reach.items()}, index=QUANTILES).T.to_markdown())
    base = provisional(reach)
    started = time.perf_counter()
    reaches = {h: base.reach_atr(h, settings.min_reward_risk) for h in sorted(reach)}
    run = quality.backfill(data, args.step_minutes, settings.min_turnover_krw, settings.min_reward_risk, base, tuple(reaches.values()))
    by_horizon = {h: run.placeable_by_reach[r] for h, r in reaches.items()}
    print(f"\nplaceable plans by the horizon's reach (of {int(run.mean_eligible * run.ticks)} eligible market-ticks): {by_horizon}")
    seconds = time.perf_counter() - started
    plans = run.plans.rename(columns={"horizon_hours": "horizon"})
    grid = minute_grid(data.candles_1m)
    plans = plans.join(quality.grade(grid, plans))
    picks = quality.scorer_lists(plans, data.top_n)
    fitted = {"source": data.name, "command": command, "step_minutes": args.step_minutes,
              "from": str(plans["as_of"].min()), "until": str(split), "plans": int((plans["as_of"] < split).sum())}
    strength, by_strength = choose_prior_strength(plans, picks, base, split)
    fitted["prior_strength_brier"] = by_strength
    table = fit(plans, picks, base, split, fitted, strength)
    print(f"\nprior strength {strength} (Brier on the last third of the fit period by strength: {by_strength})")
    train = plans[(plans["as_of"] + pd.to_timedelta(plans["horizon"], unit="h") <= split) & plans["outcome"].notna()]
    baseline = float((train["outcome"] == "target").mean())
    held_out = picks[picks["as_of"] >= split]
    served = held_out[held_out["scorer"] == settings.scorer]
    checks = {"served": quality.reliability(table, served, baseline, rng), "every_scorer": quality.reliability(table, held_out, baseline, rng)}
    counts = {int(h): {"ticks": int(run.ticks), "placeable": int((plans["horizon"] == h).sum()),
                  **{o: int(((plans["horizon"] == h) & (plans["outcome"] == o)).sum()) for o in OUTCOMES}} for h in sorted(plans["horizon"].unique())}
    print(f"\nplans per horizon ({run.ticks} ticks x ~{run.mean_eligible:.1f} eligible markets, {seconds:.0f} s): {counts}")
    print(f"fit until {split:%Y-%m-%d}: {len(train)} plans, target first {baseline:.3f}")
    cells = table.cells[table.cells["level"] < 3].assign(
        rate=lambda c: (c["target"] / c["n"]).round(3), stop_rate=lambda c: (c["stop"] / c["n"]).round(3))
    print(cells.drop(columns=["scorer", "neither_return_atr"]).to_markdown(index=False))
    for name, result in checks.items():
        print(f"\nheld out from {split:%Y-%m-%d} ({name}): {result['n']} plans, Brier {result['brier_score']} "
              f"vs {result['brier_baseline']} for the constant {result.get('baseline_rate')}")
        if result["bins"]:
            print(pd.DataFrame(result["bins"]).to_markdown(index=False))
    if args.write:
        CALIBRATION_FILE.write_text(table.to_json())
        print(f"\nwrote {CALIBRATION_FILE}")
    print("\n" + json.dumps({"command": command, "split": str(split), "reach_bars": reach_bars,
                             "reach_atr_at_floor": {h: round(table.reach_atr(h, settings.min_reward_risk), 4) for h in reach},
                             "plans": counts, "placeable_by_horizon": by_horizon, "fit_plans": len(train), "fit_target_rate": round(baseline, 4),
                             "held_out": checks, "seconds": round(seconds, 1)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
