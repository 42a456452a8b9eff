"""The measured chance of a plan: how often plans like it reached the target before the stop within their horizon.

Counts per plan key (horizon, target and stop distances in ATR, regime, scorer) at four levels, each shrunk
toward its parent so a sparse cell says little more than it; ``reach`` bounds how far a target may lie. The
table ships as ``calibration.json`` (``bench/calibrate.py``) and is refit from graded picks (docs/analyses.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import adbc_driver_manager
import numpy as np
import pandas as pd

from dantaro_assets.lib.postgres import PostgresResource, arrow_to_pandas
from dantaro_assets.recommendations.outcomes import HORIZONS, UPBIT_FEE, net_return

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
OUTCOMES = ("target", "stop", "neither")
LEVELS: tuple[tuple[str, ...], ...] = (
    ("horizon",),
    ("horizon", "target_bin", "stop_bin"),
    ("horizon", "target_bin", "stop_bin", "regime"),
    ("horizon", "target_bin", "stop_bin", "regime", "scorer"),
)
_KEYS = LEVELS[-1]
CELL_COLUMNS = ["level", *_KEYS, "n", *OUTCOMES, "neither_return_atr"]


@dataclass(frozen=True, eq=False)
class Calibration:
    """A fitted table: its cells (``CELL_COLUMNS``), bins, shrinkage, the reach per horizon and where it came from."""

    cells: pd.DataFrame
    target_atr_edges: tuple[float, ...]
    stop_atr_edges: tuple[float, ...]
    prior_strength: float
    reach: dict[int, dict[str, list[float]]]  # horizon -> {"quantile": [...], "mfe_atr": [...]}
    fitted: dict = field(default_factory=dict)  # period, source, command

    def reach_atr(self, horizon_hours: int, min_reward_risk: float) -> float:
        """How far (ATR) the price gets within the horizon as often as a plan at the floor must win to break even."""
        if horizon_hours not in self.reach:
            raise ValueError(f"no measured reach for a {horizon_hours} h horizon (have {sorted(self.reach)})")
        table = self.reach[horizon_hours]
        return float(np.interp(1.0 - 1.0 / (1.0 + min_reward_risk), table["quantile"], table["mfe_atr"]))

    def bins(self, target_atr, stop_atr) -> tuple[np.ndarray, np.ndarray]:
        """The distance bins of plans (0 = nearest)."""
        return (np.searchsorted(self.target_atr_edges, np.asarray(target_atr, float), side="right"),
                np.searchsorted(self.stop_atr_edges, np.asarray(stop_atr, float), side="right"))

    @cached_property
    def _levels(self) -> list[pd.DataFrame]:
        """Each level's cells indexed by its key (built once per table)."""
        return [self.cells[self.cells["level"] == level].set_index(list(columns)) for level, columns in enumerate(LEVELS)]

    def rates(self, plans: pd.DataFrame) -> pd.DataFrame:
        """Per plan (``horizon``, ``scorer``, ``regime``, ``target_atr``, ``stop_atr``): the shrunk chances of each
        outcome and the mean ATR return of a plan that hits neither, from the coarsest level to the finest."""
        keyed = _keyed(self, plans)
        index = pd.RangeIndex(len(plans))
        rates = None
        for cells, columns in zip(self._levels, LEVELS):
            at = cells.reindex(pd.MultiIndex.from_frame(keyed[list(columns)]) if len(columns) > 1 else pd.Index(keyed[columns[0]]))
            n = at["n"].fillna(0.0).to_numpy()
            counts = {o: at[o].fillna(0.0).to_numpy() for o in OUTCOMES}
            neither_sum = at["neither_return_atr"].fillna(0.0).to_numpy()
            if rates is None:
                if (n == 0).any():
                    missing = sorted(set(keyed.loc[n == 0, "horizon"]))
                    raise ValueError(f"the calibration table has no plans of horizon {missing} h")
                rates = pd.DataFrame({f"p_{o}": counts[o] / n for o in OUTCOMES}, index=index)
                rates["neither_return_atr"] = np.where(counts["neither"] > 0, neither_sum / np.maximum(counts["neither"], 1), 0.0)
                continue
            k = self.prior_strength
            for o in OUTCOMES:
                rates[f"p_{o}"] = (counts[o] + k * rates[f"p_{o}"]) / (n + k)
            rates["neither_return_atr"] = (neither_sum + k * rates["neither_return_atr"]) / (counts["neither"] + k)
        return rates

    def expected_return(self, plans: pd.DataFrame) -> pd.DataFrame:
        """``p_target_first`` and ``expected_return_net`` per plan (also ``entry``, ``target``, ``stop``, ``atr``):
        target first at the target, stop first at the stop, neither sold at the horizon's mean, each net of the fee."""
        rates = self.rates(plans)
        entry = plans["entry"].to_numpy(float)
        neither_exit = entry * (1.0 + rates["neither_return_atr"].to_numpy() * plans["atr"].to_numpy(float) / entry)
        expected = (rates["p_target"].to_numpy() * net_return(entry, plans["target"].to_numpy(float))
                    + rates["p_stop"].to_numpy() * net_return(entry, plans["stop"].to_numpy(float))
                    + rates["p_neither"].to_numpy() * net_return(entry, neither_exit))
        return pd.DataFrame({"p_target_first": rates["p_target"].to_numpy(), "expected_return_net": expected}, index=plans.index)

    def to_json(self) -> str:
        return json.dumps({
            "fitted": self.fitted, "prior_strength": self.prior_strength, "fee_each_way": UPBIT_FEE,
            "target_atr_edges": list(self.target_atr_edges), "stop_atr_edges": list(self.stop_atr_edges),
            "reach": {str(h): table for h, table in sorted(self.reach.items())},
            "cells": self.cells[CELL_COLUMNS].to_dict("records"),
        }, indent=1) + "\n"


def _keyed(calibration: Calibration, plans: pd.DataFrame) -> pd.DataFrame:
    target_bin, stop_bin = calibration.bins(plans["target_atr"], plans["stop_atr"])
    return pd.DataFrame({"horizon": plans["horizon"].to_numpy(int), "target_bin": target_bin, "stop_bin": stop_bin,
                         "regime": plans["regime"].to_numpy(object), "scorer": plans["scorer"].to_numpy(object)})


def count_cells(calibration: Calibration, plans: pd.DataFrame, picks: pd.DataFrame) -> pd.DataFrame:
    """The table's cells from graded plans: levels 0-2 from ``plans`` (every placeable plan once), level 3 from
    ``picks`` (a row per scorer that ranked the plan into its list). Both need ``horizon, regime, target_atr,
    stop_atr, outcome`` (one of ``OUTCOMES``) and ``return_atr`` (the ATR return at the horizon's end); picks
    also ``scorer``."""
    blank = {"horizon": -1, "target_bin": -1, "stop_bin": -1, "regime": "", "scorer": ""}
    frames = []
    for level, columns in enumerate(LEVELS):
        source = picks if level == len(LEVELS) - 1 else plans.assign(scorer="")
        outcome = source["outcome"].to_numpy(object)
        keyed = _keyed(calibration, source).assign(**{k: v for k, v in blank.items() if k not in columns})
        keyed = keyed.assign(n=1, **{o: (outcome == o).astype(int) for o in OUTCOMES},
                             neither_return_atr=np.where(outcome == "neither", source["return_atr"].to_numpy(float), 0.0))
        frames.append(keyed.groupby(list(_KEYS), as_index=False)[["n", *OUTCOMES, "neither_return_atr"]].sum().assign(level=level))
    cells = pd.concat(frames, ignore_index=True)[CELL_COLUMNS]
    return cells.astype({"level": int, "horizon": int, "target_bin": int, "stop_bin": int, "n": int, **{o: int for o in OUTCOMES}})


def with_cells(calibration: Calibration, cells: pd.DataFrame, fitted: dict) -> Calibration:
    return Calibration(cells, calibration.target_atr_edges, calibration.stop_atr_edges, calibration.prior_strength,
                       calibration.reach, fitted)


def from_json(text: str) -> Calibration:
    """A table from its JSON; ValueError saying what is missing when it is not one."""
    try:
        data = json.loads(text)
        cells = pd.DataFrame(data["cells"], columns=CELL_COLUMNS).fillna({"regime": "", "scorer": ""})
        return Calibration(cells, tuple(data["target_atr_edges"]), tuple(data["stop_atr_edges"]), float(data["prior_strength"]),
                           {int(h): table for h, table in data["reach"].items()}, data.get("fitted", {}))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a calibration table: {type(exc).__name__}: {exc}") from exc


def checked_calibration(path: Path, horizons: set[int]) -> Calibration:
    """The table at ``path``, refused (ValueError naming the file) unless it reads and covers every horizon."""
    try:
        table = load_calibration(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"DANTARO_CALIBRATION {path}: {exc}") from exc
    counted = set(table.cells.loc[(table.cells["level"] == 0) & (table.cells["n"] > 0), "horizon"].astype(int))
    missing = sorted(h for h in horizons if h not in counted or h not in table.reach)
    if missing:
        raise ValueError(f"DANTARO_CALIBRATION {path}: no plans or reach for the {missing} h horizon(s) the scorers hold")
    return table


@cache
def load_calibration(path: Path = CALIBRATION_FILE) -> Calibration:
    """The shipped table (read once per process)."""
    return from_json(path.read_text())


def refit_from_outcomes(base: Calibration, recommendations: pd.DataFrame, outcomes: pd.DataFrame) -> Calibration:
    """The table recounted from stored picks and their grades (``recommendation_outcomes``), keeping ``base``'s bins,
    shrinkage and reach.

    A pick's outcome within its horizon: ``first_hit`` with ``minutes_to_hit`` inside the horizon, else
    neither, sold at ``return_<horizon>`` (net of fees, from the entry minute's open; added back to gross
    here). Only picks are graded, so every level counts the plans a scorer listed (levels 0-2 once per
    plan, the scorer level once per scorer); ungraded horizons are left out.
    """
    columns = ["as_of", "scorer", "market", "horizon_hours", "regime", "entry", "target", "stop", "reasons"]
    graded = recommendations[columns].merge(outcomes[["as_of", "scorer", "market", "first_hit", "minutes_to_hit",
                                                      *[f"return_{h}" for h in HORIZONS]]], on=["as_of", "scorer", "market"])
    graded = graded[graded["horizon_hours"].isin([int(h / pd.Timedelta(hours=1)) for h in HORIZONS.values()])]
    label = graded["horizon_hours"].map(lambda h: f"{int(h)}h")
    at_horizon = np.array([graded[f"return_{lb}"].iat[i] for i, lb in enumerate(label)], dtype=float) if len(graded) else np.array([])
    graded = graded[np.isfinite(at_horizon)]
    at_horizon = at_horizon[np.isfinite(at_horizon)]
    inside = graded["minutes_to_hit"].fillna(np.inf) <= graded["horizon_hours"] * 60
    outcome = np.where(inside & graded["first_hit"].isin(["target", "stop"]), graded["first_hit"], "neither")
    atr_pct = graded["reasons"].map(lambda r: (r if isinstance(r, dict) else json.loads(r))["volatility"]["atr14_pct"] / 100.0)
    gross = (1.0 + at_horizon) * (1.0 + UPBIT_FEE) / (1.0 - UPBIT_FEE) - 1.0
    plans = pd.DataFrame({
        "scorer": graded["scorer"].to_numpy(), "horizon": graded["horizon_hours"].to_numpy(int), "regime": graded["regime"].to_numpy(),
        "target_atr": ((graded["target"] / graded["entry"] - 1.0) / atr_pct).to_numpy(),
        "stop_atr": ((1.0 - graded["stop"] / graded["entry"]) / atr_pct).to_numpy(),
        "outcome": outcome, "return_atr": (gross / atr_pct).to_numpy(),
        "as_of": graded["as_of"].to_numpy(), "market": graded["market"].to_numpy(),
    })
    once = plans.drop_duplicates(["as_of", "market", "horizon"])
    fitted = {"source": "recommendation_outcomes", "plans": len(once), "picks": len(plans),
              "from": str(plans["as_of"].min()) if len(plans) else None, "until": str(plans["as_of"].max()) if len(plans) else None}
    return with_cells(base, count_cells(base, once, plans), fitted)


def refit_from_postgres(postgres: PostgresResource, base: Calibration, days: int) -> Calibration:
    """``refit_from_outcomes`` over the picks of the last ``days`` days up to the newest graded one (every scorer's);
    ValueError when none is graded yet."""
    recs, graded = postgres.table_name("recommendations"), postgres.table_name("recommendation_outcomes")
    returns = ", ".join(f"o.return_{h}" for h in HORIZONS)
    sql = (f"SELECT r.as_of, r.scorer, r.market, r.horizon_hours, r.regime, r.entry, r.target, r.stop, r.reasons::text AS reasons, "
           f"o.first_hit, o.minutes_to_hit, {returns} FROM {recs} r JOIN {graded} o USING (as_of, scorer, market) "
           f"WHERE r.horizon_hours IS NOT NULL AND r.as_of > (SELECT max(as_of) FROM {graded}) - interval '{int(days)} days'")
    try:
        frame = arrow_to_pandas(postgres.read_arrow(sql))
    except adbc_driver_manager.ProgrammingError as exc:
        raise ValueError(f"no graded picks to refit from ({type(exc).__name__}: the tables or their horizon_hours column are "
                         "not stored yet)") from exc
    if frame.empty:
        raise ValueError(f"no graded picks with a horizon in the last {days} days")
    frame["reasons"] = frame["reasons"].map(json.loads)
    outcome_columns = ["as_of", "scorer", "market", "first_hit", "minutes_to_hit", *[f"return_{h}" for h in HORIZONS]]
    return refit_from_outcomes(base, frame.drop(columns=outcome_columns[3:]), frame[outcome_columns])
