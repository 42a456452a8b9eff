"""Infinity and NaN never get stored: the parser quarantines them, every pandera schema refuses them.

Python's json reads the non-standard literals ``NaN``, ``Infinity`` and ``-Infinity`` as floats, and
``inf`` passes range checks such as ``gt(0)``, so both the parser and the schemas must say no.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.errors import SchemaErrors

from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.schemas import FINITE
from dantaro_assets.lib.upbit import UpbitClient, interval, parsing
from dantaro_assets.market_status.schemas import market_status_schema
from dantaro_assets.markets.schemas import (
    candles_schema,
    upbit_instruments_schema,
    upbit_markets_schema,
)
from dantaro_assets.recommendations.schemas import (
    outcomes_schema,
    recommendations_schema,
)
from dantaro_assets.support_levels.schemas import support_levels_schema

MINUTE = interval("minute1")
TO = pd.Timestamp("2025-09-15T11:00Z")
FIELDS = ["opening_price", "high_price", "low_price", "trade_price", "candle_acc_trade_volume", "candle_acc_trade_price"]


def _page(field: str, literal: str) -> object:
    """A page of two candles whose second one carries ``literal`` in ``field``, decoded by Python's json as the client does."""
    good = {"market": "KRW-BTC", "candle_date_time_utc": "2025-09-15T10:00:00", "opening_price": 100.0, "high_price": 110.0,
            "low_price": 90.0, "trade_price": 105.0, "candle_acc_trade_volume": 1.5, "candle_acc_trade_price": 157.5}
    text = json.dumps([good, {**good, "candle_date_time_utc": "2025-09-15T10:01:00", field: "@"}]).replace('"@"', literal)
    return json.loads(text)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(("literal", "reason"), [
    ("Infinity", "non-finite"), ("-Infinity", "non-finite"), ("NaN", "missing or non-numeric"),
])
def test_the_parser_quarantines_json_infinity_and_nan(field, literal, reason):
    page = _page(field, literal)
    good, bad = parsing.parse_candle_page(page, market="KRW-BTC", interval=MINUTE, to=TO, endpoint="/v1/candles/minutes/1")
    assert good["candle_start"].tolist() == [pd.Timestamp("2025-09-15T10:00Z")]
    assert bad["candle_start"].tolist() == [pd.Timestamp("2025-09-15T10:01Z")]
    assert bad["reason"].iloc[0].startswith(f"{reason} {field}")


CLOCK = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
HOUR = (pd.Timestamp("2026-03-02T09:00Z"), pd.Timestamp("2026-03-02T10:00Z"))


@pytest.mark.parametrize(("variant", "literal", "reason"), [
    ("infinite_price", b'"trade_price":Infinity', "non-finite trade_price (Infinity)"),
    ("nan_volume", b'"candle_acc_trade_volume":NaN', "missing or non-numeric candle_acc_trade_volume"),
])
def test_the_replay_serves_non_finite_literals_and_the_client_quarantines_them(replay, settings, variant, literal, reason):
    replay.set_clock(CLOCK)
    params = {"market": "KRW-BTC", "count": 3, "to": "2026-03-02T10:00:00Z"}
    replay.inject("bad_candle", path="/v1/candles/*", count=1, variant=variant)
    assert literal in httpx.get(f"{replay.url}/v1/candles/minutes/1", params=params, timeout=10).content

    client = UpbitClient(base_url=replay.url, backoff_seconds=0.05,
                         redis=RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:{uuid.uuid4().hex[:6]}"))
    reference, _ = client.candles(["KRW-BTC"], "minute1", *HOUR)
    replay.inject("bad_candle", path="/v1/candles/*", count=1, variant=variant)
    candles, stats = client.candles(["KRW-BTC"], "minute1", *HOUR)
    assert stats.quarantined["reason"].tolist() == [reason]
    spoiled = reference["candle_start"].max()  # the fault spoils the newest candle of the page
    pd.testing.assert_frame_equal(candles, reference[reference["candle_start"] != spoiled].reset_index(drop=True))
    assert np.isfinite(candles[parsing.PRICE_COLUMNS + ["volume", "value"]].to_numpy()).all()


START, END = pd.Timestamp("2025-09-15T10:00Z"), pd.Timestamp("2025-09-15T11:00Z")
SCHEMAS = {
    "candles": candles_schema(START, END),
    "upbit_markets": upbit_markets_schema(START, END),
    "market_status": market_status_schema(START, END),
    "support_levels": support_levels_schema(START, END),
    "upbit_instruments": upbit_instruments_schema(START, END),
    "recommendations": recommendations_schema(START, END, pd.DataFrame(columns=["as_of", "market"]), 1.5),
    "recommendation_outcomes": outcomes_schema(START, END),
}


def _float_columns(schema: pa.DataFrameSchema) -> list[str]:
    return [name for name, column in schema.columns.items() if pd.api.types.is_float_dtype(column.dtype.type)]


def _one_row(schema: pa.DataFrameSchema) -> pd.DataFrame:
    """A row with a plausible value of each column's type (other checks may fail; only the finite one is looked at)."""
    def value(column: pa.Column) -> object:
        kind = column.dtype.type
        if isinstance(kind, pd.DatetimeTZDtype):
            return START
        if pd.api.types.is_float_dtype(kind):
            return 1.0
        if pd.api.types.is_integer_dtype(kind):
            return 1
        if pd.api.types.is_bool_dtype(kind):
            return False
        return {} if column.name in ("reasons", "pivot") else "KRW-BTC"
    row = pd.DataFrame({name: [value(column)] for name, column in schema.columns.items()})
    return row.astype({name: column.dtype.type for name, column in schema.columns.items() if not isinstance(column.dtype.type, str)})


def _failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> set[tuple[str, str]]:
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        return set(zip(exc.failure_cases["column"].astype(str), exc.failure_cases["check"].astype(str)))
    return set()


def test_every_float_column_of_every_schema_carries_the_finite_check():
    floats = {name: _float_columns(schema) for name, schema in SCHEMAS.items()}
    assert all(floats[name] for name in SCHEMAS if name != "upbit_markets"), floats
    for name, schema in SCHEMAS.items():
        assert all(FINITE.name in [c.name for c in schema.columns[column].checks] for column in floats[name]), name


@pytest.mark.parametrize("name", [n for n in SCHEMAS if n != "upbit_markets"])
def test_every_schema_refuses_inf_and_nan_in_its_float_columns(name):
    schema = SCHEMAS[name]
    baseline = _one_row(schema)
    finite_error = FINITE.error
    assert not {f for f in _failures(schema, baseline) if f[1] == finite_error}
    for column in _float_columns(schema):
        for bad in (np.inf, -np.inf):
            frame = baseline.copy()
            frame[column] = bad
            assert (column, finite_error) in _failures(schema, frame), f"{name}.{column} accepted {bad}"
        frame = baseline.copy()
        frame[column] = np.nan
        refused = (column, "not_nullable") in _failures(schema, frame)
        assert refused != schema.columns[column].nullable, f"{name}.{column}: NaN must be refused unless the column is nullable"
