"""The calibration table: counting, shrinkage toward the parent, the reach, the expected return, the refit from outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dantaro_assets.recommendations import definitions
from dantaro_assets.recommendations.calibration import (
    CALIBRATION_FILE,
    checked_calibration,
    count_cells,
    from_json,
    load_calibration,
    refit_from_outcomes,
)
from dantaro_assets.recommendations.outcomes import UPBIT_FEE, net_return
from dantaro_assets.recommendations.scorers import SCORERS

from .conftest import flat_calibration

AS_OF = pd.Timestamp("2025-09-10 00:00", tz="UTC")


def _plans(outcomes: list[str], regime: str = "neutral", target_atr: float = 1.5, stop_atr: float = 0.8,
           returns: list[float] | None = None) -> pd.DataFrame:
    n = len(outcomes)
    return pd.DataFrame({"horizon": 24, "regime": regime, "target_atr": target_atr, "stop_atr": stop_atr, "outcome": outcomes,
                         "return_atr": returns if returns is not None else [0.0] * n, "scorer": "reversal",
                         "as_of": AS_OF + pd.to_timedelta(np.arange(n), unit="h"), "market": "KRW-A"})


def test_a_sparse_cell_is_shrunk_toward_its_parent():
    """Every plan of the horizon: 30 of 104 reached the target first; a cell of 4 plans, all targets first, is pulled
    toward its parent with the prior's weight: (4 + k p) / (4 + k), at each level."""
    base = flat_calibration()
    plans = pd.concat([_plans(["target"] * 26 + ["stop"] * 70 + ["neither"] * 4, regime="neutral", target_atr=3.0),
                       _plans(["target"] * 4, regime="risk_on")], ignore_index=True)
    table = type(base)(count_cells(base, plans, plans.iloc[:0]), base.target_atr_edges, base.stop_atr_edges, 20.0, base.reach)
    asked = pd.DataFrame({"horizon": [24], "scorer": ["reversal"], "regime": ["risk_on"], "target_atr": [1.5], "stop_atr": [0.8]})
    top = 30 / 104
    distances = (4 + 20 * top) / (4 + 20)  # the (target, stop) cell holds the 4 risk_on plans only
    regime = (4 + 20 * distances) / (4 + 20)
    assert table.rates(asked)["p_target"].iloc[0] == pytest.approx(regime)  # the scorer level holds nothing: no further pull
    unseen = asked.assign(regime="risk_off")
    assert table.rates(unseen)["p_target"].iloc[0] == pytest.approx(distances)  # an empty cell says what its parent says


def test_the_chances_of_every_outcome_sum_to_one():
    base = flat_calibration(target=3, stop=5, neither=2)
    rates = base.rates(pd.DataFrame({"horizon": [24, 24], "scorer": ["v1", "rs_btc"], "regime": ["neutral", "unknown"],
                                     "target_atr": [0.5, 2.5], "stop_atr": [0.5, 1.5]}))
    np.testing.assert_allclose(rates[["p_target", "p_stop", "p_neither"]].sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="no plans of horizon"):
        base.rates(pd.DataFrame({"horizon": [4], "scorer": ["v1"], "regime": ["neutral"], "target_atr": [1.0], "stop_atr": [1.0]}))


def test_the_expected_return_is_net_of_the_fee_on_both_legs():
    """60 % target (+3 %), 30 % stop (-2 %), 10 % neither, sold 0.5 ATR up (ATR 1 % of the entry)."""
    base = flat_calibration(target=6, stop=3, neither=1)
    base.cells.loc[0, "neither_return_atr"] = 0.5  # the one neither plan ended 0.5 ATR up
    plan = pd.DataFrame({"horizon": [24], "scorer": ["v1"], "regime": ["neutral"], "target_atr": [3.0], "stop_atr": [2.0],
                         "entry": [100.0], "target": [103.0], "stop": [98.0], "atr": [1.0]})
    got = base.expected_return(plan).iloc[0]
    expected = 0.6 * net_return(100.0, 103.0) + 0.3 * net_return(100.0, 98.0) + 0.1 * net_return(100.0, 100.5)
    assert got["p_target_first"] == pytest.approx(0.6) and got["expected_return_net"] == pytest.approx(expected)
    assert net_return(100.0, 100.0) == pytest.approx((1 - UPBIT_FEE) / (1 + UPBIT_FEE) - 1)


def test_the_reach_is_the_excursion_reached_as_often_as_the_floor_breaks_even():
    """Floor 1.5: break-even 1 / 2.5 = 40 % of plans, so the excursion exceeded 40 % of the time, the 60th percentile."""
    table = flat_calibration()
    table.reach[24] = {"quantile": [0.5, 0.6, 0.7], "mfe_atr": [1.8, 2.4, 3.1]}
    assert table.reach_atr(24, 1.5) == pytest.approx(2.4)
    assert table.reach_atr(24, 2.0) == pytest.approx(2.4 + (2 / 3 - 0.6) / 0.1 * 0.7)  # a higher floor reaches further
    with pytest.raises(ValueError, match="no measured reach for a 4 h horizon"):
        table.reach_atr(4, 1.5)


def test_a_table_survives_its_json():
    base = flat_calibration()
    plans = _plans(["target", "stop", "neither"], returns=[0.0, 0.0, 0.7])
    table = type(base)(count_cells(base, plans, plans), base.target_atr_edges, base.stop_atr_edges, 30.0, base.reach, {"source": "test"})
    again = from_json(table.to_json())
    pd.testing.assert_frame_equal(again.cells, table.cells, check_dtype=False)
    assert (again.prior_strength, again.reach, again.fitted) == (30.0, table.reach, {"source": "test"})


def test_the_shipped_table_covers_every_scorer_and_says_where_it_came_from():
    table = load_calibration()
    assert table.fitted["source"].startswith("recorded") and "bench/calibrate.py" in table.fitted["command"]
    for scorer in SCORERS.values():
        asked = pd.DataFrame({"horizon": [scorer.horizon_hours], "scorer": [scorer.name], "regime": ["neutral"],
                              "target_atr": [1.5], "stop_atr": [1.0]})
        assert 0 < table.rates(asked)["p_target"].iloc[0] < 1
        assert table.reach_atr(scorer.horizon_hours, 1.5) > 0
    assert from_json(CALIBRATION_FILE.read_text()).cells.equals(table.cells)


def test_a_refit_from_graded_picks_counts_each_pick_at_its_horizon():
    """Three picks: the target 2 h in, the stop 23 h in, the stop only after 24 h (neither within the horizon, sold at
    the 24 h return); each plan once at the plan levels, once per scorer at the scorer level."""
    reasons = {"volatility": {"atr14_pct": 1.0}}
    recs = pd.DataFrame({"as_of": AS_OF, "scorer": ["reversal", "reversal", "v1"], "market": ["KRW-A", "KRW-B", "KRW-C"],
                         "horizon_hours": 24, "regime": "neutral", "entry": 100.0, "target": 102.0, "stop": 99.0,
                         "reasons": [reasons] * 3})
    graded = pd.DataFrame({"as_of": AS_OF, "scorer": recs["scorer"], "market": recs["market"],
                           "first_hit": ["target", "stop", None], "minutes_to_hit": [120.0, 23 * 60.0, np.nan],
                           "return_1h": 0.0, "return_4h": 0.0, "return_24h": [0.02, -0.01, net_return(100.0, 100.5)]})
    table = refit_from_outcomes(flat_calibration(), recs, graded)
    top = table.cells[table.cells["level"] == 0].iloc[0]
    assert (top["n"], top["target"], top["stop"], top["neither"]) == (3, 1, 1, 1)
    assert top["neither_return_atr"] == pytest.approx(0.5)  # +0.5 % gross at ATR 1 %
    scorer_level = table.cells[table.cells["level"] == 3].set_index("scorer")
    assert scorer_level.loc["reversal", "n"] == 2 and scorer_level.loc["v1", "neither"] == 1
    assert table.fitted["source"] == "recommendation_outcomes" and table.reach == flat_calibration().reach


def test_a_served_table_that_is_malformed_or_lacks_a_horizon_stops_the_definitions(tmp_path, settings):
    """DANTARO_CALIBRATION names a file: one that is not a table, or covers no 24 h plans, is refused naming the file."""
    broken = tmp_path / "broken.json"
    broken.write_text('{"cells": []}')
    with pytest.raises(ValueError, match=f"DANTARO_CALIBRATION {broken}: not a calibration table"):
        definitions.build_defs(settings.model_copy(update={"calibration": str(broken)}))
    four_hours = tmp_path / "four_hours.json"
    four_hours.write_text(flat_calibration(horizon=4).to_json())
    with pytest.raises(ValueError, match=r"no plans or reach for the \[24\] h horizon"):
        checked_calibration(four_hours, {24})
    good = tmp_path / "good.json"
    good.write_text(flat_calibration().to_json())
    assert definitions.build_defs(settings.model_copy(update={"calibration": str(good)})) is not None
