"""The live scorecard: every scorer's graded picks of the last 30 days read from Postgres, summarised.

One home for what the API's ``/recommendations/scorecard`` answers and what ``recommendation_outcomes``
shows in the Dagster UI (its ``scorecard`` metadata table). Rows stored before picks carried a ``scorer`` were ranked by ``v1``.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
import pandas as pd

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import read_table
from dantaro_assets.recommendations.outcomes import (
    HORIZONS,
    SCORECARD_WINDOWS,
    scorecard,
)
from dantaro_assets.recommendations.scorers import SCORERS

_LEGACY_SCORER = "v1"  # the only ranking before scorers were named
SCORECARD_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn(name, kind, description=about) for name, kind, about in [
        ("window", "string", "the last 7 or 30 days of ticks"),
        ("scorer", "string", "recommendations.scorers name"),
        ("horizon", "string", "holding period"),
        ("picks", "int", "picks graded at this horizon"),
        ("ticks", "int", "ticks with graded picks"),
        ("hit_rate", "float", "share of picks beating the equal-weight universe, net of fees"),
        ("mean_excess", "float", "mean net return minus the universe's (fraction)"),
        ("excess_ci_low", "float", "95 % block-bootstrap interval of mean_excess"),
        ("excess_ci_high", "float", "95 % block-bootstrap interval of mean_excess"),
        ("rank_ic", "float", "mean Spearman of score and return among a tick's picks"),
        ("target_before_stop", "float", "share of decided 24 h races the target won"),
    ]
])  # fmt: skip


_SPAN = max(SCORECARD_WINDOWS.values())


def recent_outcomes(postgres: PostgresResource, span: pd.Timedelta = _SPAN) -> pd.DataFrame:
    """Graded picks of the ``span`` up to the newest stored tick (empty when the table does not exist yet)."""
    columns = ["as_of", "scorer", "market", "score", "first_hit",
               *[f"{kind}_{h}" for h in HORIZONS for kind in ("return", "excess")]]  # fmt: skip
    table = postgres.table_name("recommendation_outcomes")
    seconds = int(span.total_seconds())
    frame = read_table(postgres, "recommendation_outcomes", where=f"as_of > (SELECT max(as_of) FROM {table}) - interval '{seconds} seconds'")
    if frame is None:
        frame = pd.DataFrame(columns=columns).astype({"as_of": "datetime64[ns, UTC]"})
    if "scorer" not in frame:
        frame["scorer"] = None
    frame["scorer"] = frame["scorer"].fillna(_LEGACY_SCORER)
    return frame[columns]


def scorecard_report(outcomes: pd.DataFrame, served: str) -> dict[str, Any]:
    """The scorecard as a JSON-ready dict: up to which tick, which scorer serves, the windows, one row per window/scorer/horizon."""
    table = scorecard(outcomes)
    newest = outcomes["as_of"].max() if len(outcomes) else None
    return {
        "until": None if newest is None else newest.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "served": served,
        "scorers": {name: scorer.description for name, scorer in SCORERS.items()},
        "windows": list(SCORECARD_WINDOWS),
        "horizons": list(HORIZONS),
        "rows": json.loads(table.to_json(orient="records")),
    }
