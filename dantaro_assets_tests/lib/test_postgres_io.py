"""The Postgres IO manager on the real test database: partition replace and merge, transactions, ranged reads, types."""

import time
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import (
    MissingUpstreamTableError,
    RefusedFrameError,
    SchemaDriftError,
    WriteMode,
    read_table,
    table_exists,
)
from dantaro_assets.partitions import hourly_partitions, lookback_hours
from dantaro_assets_tests.lib.storage_data import (
    HOUR_A,
    HOUR_B,
    HOUR_C,
    MERGE_METADATA,
    candles,
    read,
    write,
)


@pytest.fixture
def io_manager(io_resources):
    return io_resources["io_manager"]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["candle_start", "market"]).reset_index(drop=True)


def test_rewrite_replaces_only_its_partition(io_manager):
    write(io_manager, candles(HOUR_A), "replace_candles", partitions=(HOUR_A, HOUR_A))
    write(io_manager, candles(HOUR_B), "replace_candles", partitions=(HOUR_B, HOUR_B))
    new_a = candles(HOUR_A, markets=("KRW-XRP",), minutes=2, base=500.0)
    metadata = write(io_manager, new_a, "replace_candles", partitions=(HOUR_A, HOUR_A))

    got = read(io_manager, "replace_candles", partitions=(HOUR_A, HOUR_B))
    pd.testing.assert_frame_equal(got, _sorted(pd.concat([new_a, candles(HOUR_B)])))
    assert metadata["dagster/partition_row_count"].value == 2
    assert metadata["time_window_start"].value == "2025-09-01T00:00:00+00:00"
    assert metadata["dagster/table_name"].value.endswith(".replace_candles")


def test_tables_get_typed_columns_and_one_time_first_key_index(io_manager, postgres_resource):
    write(io_manager, candles(HOUR_A), "typed_candles", partitions=(HOUR_A, HOUR_A))
    keyless = {"partition_expr": "candle_start", "write_mode": WriteMode.REPLACE}
    closes = candles(HOUR_A)[["market", "candle_start", "close"]]
    write(io_manager, closes, "keyless_candles", partitions=(HOUR_A, HOUR_A), metadata=keyless)
    schema = postgres_resource.db_schema
    columns = postgres_resource.read_frame(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'typed_candles' ORDER BY ordinal_position",
        (schema,),
    )
    assert dict(zip(columns["column_name"], columns["data_type"])) == {
        "market": "text", "candle_start": "timestamp with time zone", **dict.fromkeys(["open", "high", "low", "close", "volume", "value"], "double precision")
    }
    indexes = postgres_resource.read_frame("SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname", (schema,))
    definitions = {(row.tablename, row.indexdef.split(" USING ")[1]) for row in indexes.itertuples() if row.tablename in ("typed_candles", "keyless_candles")}
    assert definitions == {("typed_candles", "btree (candle_start, market)"), ("keyless_candles", "btree (candle_start)")}
    assert "UNIQUE" in indexes.set_index("tablename").loc["typed_candles", "indexdef"]


def test_read_returns_exactly_its_window(io_manager):
    for hour in (HOUR_A, HOUR_B, HOUR_C):
        write(io_manager, candles(hour), "window_candles", partitions=(hour, hour))
    # Rows sit on the hour marks, so an inclusive end or an exclusive start would show here.
    pd.testing.assert_frame_equal(read(io_manager, "window_candles", partitions=(HOUR_B, HOUR_B)), _sorted(candles(HOUR_B)))
    pd.testing.assert_frame_equal(read(io_manager, "window_candles", partitions=(HOUR_A, HOUR_B)), _sorted(pd.concat([candles(HOUR_A), candles(HOUR_B)])))


def test_range_write_replaces_every_hour_of_a_backfill(io_manager):
    write(io_manager, candles(HOUR_A), "range_candles", partitions=(HOUR_A, HOUR_A))
    write(io_manager, candles(HOUR_C), "range_candles", partitions=(HOUR_C, HOUR_C))
    backfill = pd.concat([candles(HOUR_A, base=7.0), candles(HOUR_B, base=8.0)])
    metadata = write(io_manager, backfill, "range_candles", partitions=(HOUR_A, HOUR_B))

    assert metadata["time_window_end"].value == "2025-09-01T02:00:00+00:00"
    got = read(io_manager, "range_candles", partitions=(HOUR_A, HOUR_C))
    pd.testing.assert_frame_equal(got, _sorted(pd.concat([backfill, candles(HOUR_C)])))


def test_failed_insert_leaves_previous_rows(io_manager, postgres_resource):
    original = candles(HOUR_A)
    write(io_manager, original, "atomic_candles", partitions=(HOUR_A, HOUR_A))
    broken = candles(HOUR_A, base=900.0)
    broken.loc[3, "market"] = "KRW-\x00BAD"  # Postgres text cannot hold NUL: the COPY fails after the DELETE ran

    with pytest.raises(Exception, match="0x00"):
        write(io_manager, broken, "atomic_candles", partitions=(HOUR_A, HOUR_A))

    pd.testing.assert_frame_equal(read(io_manager, "atomic_candles", partitions=(HOUR_A, HOUR_A)), _sorted(original))


def test_concurrent_writes_of_one_partition_take_turns(io_manager, postgres_resource):
    write(io_manager, candles(HOUR_A), "raced_candles", partitions=(HOUR_A, HOUR_A))
    frames = [candles(HOUR_A, minutes=60, base=100.0), candles(HOUR_A, minutes=60, base=200.0)]
    # Hold the partition's rows locked so both writers reach the database before either can finish.
    with postgres_resource.connect() as blocker, blocker.cursor() as cur, ThreadPoolExecutor(2) as pool:
        cur.execute(f"DELETE FROM {postgres_resource.table_name('raced_candles')}")
        writes = [pool.submit(write, io_manager, frame, "raced_candles", partitions=(HOUR_A, HOUR_A)) for frame in frames]
        time.sleep(1.5)
        blocker.rollback()
        for done in writes:
            done.result()
    got = read(io_manager, "raced_candles", partitions=(HOUR_A, HOUR_A))
    assert any(got.equals(_sorted(frame)) for frame in frames), "one whole write must win, never a mix or a key collision"


def test_rows_outside_the_window_are_refused_before_the_database(io_manager, postgres_resource):
    stray = pd.concat([candles(HOUR_A), candles(HOUR_B).head(1)])
    with pytest.raises(ValueError, match=r"1 row\(s\) have candle_start outside the partition window"):
        write(io_manager, stray, "stray_candles", partitions=(HOUR_A, HOUR_A))
    assert postgres_resource.read_frame("SELECT to_regclass($1) AS t", (f"{postgres_resource.db_schema}.stray_candles",))["t"].isna().all()


def test_duplicate_keys_and_naive_times_are_refused(io_manager):
    doubled = pd.concat([candles(HOUR_A), candles(HOUR_A).head(2)])
    with pytest.raises(ValueError, match=r"4 rows share a primary key \['market', 'candle_start'\]"):
        write(io_manager, doubled, "bad_candles", partitions=(HOUR_A, HOUR_A))
    naive = candles(HOUR_A).assign(candle_start=lambda f: f["candle_start"].dt.tz_localize(None))
    with pytest.raises(TypeError, match="must be tz-aware datetimes"):
        write(io_manager, naive, "bad_candles", partitions=(HOUR_A, HOUR_A))


def test_types_round_trip_exactly(io_manager):
    metadata = {"partition_expr": "as_of", "primary_key": ["as_of", "market"], "write_mode": WriteMode.REPLACE}
    frame = pd.DataFrame(
        {
            "as_of": pd.to_datetime(["2025-09-01 00:02", "2025-09-01 00:02", "2025-09-01 00:04"], utc=True),
            "market": ["KRW-BTC", "KRW-ETH", "KRW-BTC"],
            "score": [0.5, float("nan"), -1.25],
            "rank": [1, 2, 1],
            "warning": [True, False, True],
            "note": ["ok", None, "한글"],
            "seen_at": pd.to_datetime(["2025-08-31 23:59:59.123456", None, "2025-09-01 00:03:00.000000"], utc=True),
            "reasons": [["rsi<30", "volume x3"], [], {"why": "breakout", "level": 101.5}],
        }
    )
    write(io_manager, frame, "typed_snapshots", partitions=(HOUR_A, HOUR_A), metadata=metadata)
    got = read(io_manager, "typed_snapshots", partitions=(HOUR_A, HOUR_A), metadata=metadata)
    pd.testing.assert_frame_equal(got, frame)


def test_an_empty_frame_creates_a_typed_table(io_manager, postgres_resource):
    typed_empty = candles(HOUR_A).iloc[:0]
    write(io_manager, typed_empty, "never_filled", partitions=(HOUR_A, HOUR_A))
    got = read(io_manager, "never_filled", partitions=(HOUR_A, HOUR_B))
    assert got.empty and list(got.columns) == list(typed_empty.columns)
    assert str(got["candle_start"].dtype) == "datetime64[ns, UTC]" and got["close"].dtype == "float64"
    write(io_manager, typed_empty, "never_filled", partitions=(HOUR_A, HOUR_A))  # an empty window stays empty: nothing to refuse


def test_an_empty_frame_never_replaces_stored_rows_unless_the_asset_asks(io_manager):
    write(io_manager, candles(HOUR_A), "emptied_candles", partitions=(HOUR_A, HOUR_A))
    with pytest.raises(RefusedFrameError, match=r"emptied_candles: an empty frame would delete the 6 row\(s\) stored in its window "
                                                r"\[2025-09-01T00:00:00\+00:00, 2025-09-01T01:00:00\+00:00\); nothing was written"):
        write(io_manager, candles(HOUR_A).iloc[:0], "emptied_candles", partitions=(HOUR_A, HOUR_A))
    pd.testing.assert_frame_equal(read(io_manager, "emptied_candles", partitions=(HOUR_A, HOUR_A)), _sorted(candles(HOUR_A)))

    # dg.Output(frame, metadata={"delete_window": True}): the asset says it means the delete
    write(io_manager, candles(HOUR_A).iloc[:0], "emptied_candles", partitions=(HOUR_A, HOUR_A), output_metadata={"delete_window": True})
    assert read(io_manager, "emptied_candles", partitions=(HOUR_A, HOUR_A)).empty


@pytest.mark.parametrize("metadata", [None, MERGE_METADATA], ids=["replace", "merge"])
def test_a_frame_of_key_columns_only_is_refused_and_the_stored_rows_kept(io_manager, metadata):
    table = f"key_only_{'merge' if metadata else 'replace'}"
    write(io_manager, candles(HOUR_A), table, partitions=(HOUR_A, HOUR_A), metadata=metadata)
    keys = candles(HOUR_A, minutes=4)[["market", "candle_start"]]  # one new minute, every other column missing
    with pytest.raises(RefusedFrameError, match=f"{table}: the frame holds key columns only.*nothing was written"):
        write(io_manager, keys, table, partitions=(HOUR_A, HOUR_A), metadata=metadata)
    pd.testing.assert_frame_equal(read(io_manager, table, partitions=(HOUR_A, HOUR_A)), _sorted(candles(HOUR_A)))


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinity_is_refused_by_the_io_manager_itself(io_manager, value):
    write(io_manager, candles(HOUR_A), "infinite_candles", partitions=(HOUR_A, HOUR_A), metadata=MERGE_METADATA)
    bad = candles(HOUR_A, base=300.0)
    bad.loc[2, "close"] = value
    with pytest.raises(RefusedFrameError, match=r"infinite_candles: ±inf in float column\(s\) \{'close': 1\}.*nothing was written"):
        write(io_manager, bad, "infinite_candles", partitions=(HOUR_A, HOUR_A), metadata=MERGE_METADATA)
    pd.testing.assert_frame_equal(read(io_manager, "infinite_candles", partitions=(HOUR_A, HOUR_A)), _sorted(candles(HOUR_A)))


@pytest.mark.parametrize("metadata", [None, MERGE_METADATA], ids=["replace", "merge"])
def test_a_frame_without_columns_is_refused_and_the_stored_rows_kept(io_manager, metadata):
    table = f"columnless_{'merge' if metadata else 'replace'}"
    write(io_manager, candles(HOUR_A), table, partitions=(HOUR_A, HOUR_A), metadata=metadata)
    with pytest.raises(RefusedFrameError, match=f"{table}: the frame has no columns.*nothing was written"):
        write(io_manager, pd.DataFrame(), table, partitions=(HOUR_A, HOUR_A), metadata=metadata)
    pd.testing.assert_frame_equal(read(io_manager, table, partitions=(HOUR_A, HOUR_A)), _sorted(candles(HOUR_A)))
    with pytest.raises(RefusedFrameError):
        write(io_manager, pd.DataFrame(), "never_written", partitions=(HOUR_A, HOUR_A), metadata=metadata)
    with pytest.raises(MissingUpstreamTableError):
        read(io_manager, "never_written", partitions=(HOUR_A, HOUR_A))


def test_merge_replaces_rows_of_the_same_key_and_keeps_every_other_row(io_manager):
    stored = pd.concat([candles(HOUR_A), candles(HOUR_B)])
    write(io_manager, stored, "merged_candles", partitions=(HOUR_A, HOUR_B), metadata=MERGE_METADATA)
    # ETH minutes 1-3 of HOUR_A at new prices (minute 3 is new); BTC and ETH minute 0 are not in the reply.
    reply = candles(HOUR_A, markets=("KRW-ETH",), minutes=4, base=500.0).iloc[1:].reset_index(drop=True)
    metadata = write(io_manager, reply, "merged_candles", partitions=(HOUR_A, HOUR_A), metadata=MERGE_METADATA)

    kept = stored[~((stored["market"] == "KRW-ETH") & stored["candle_start"].isin(reply["candle_start"]))]
    got = read(io_manager, "merged_candles", partitions=(HOUR_A, HOUR_B))
    pd.testing.assert_frame_equal(got, _sorted(pd.concat([kept, reply])))
    assert len(got) == len(stored) + 1
    assert (metadata["write_mode"].value, metadata["rows_written"].value) == ("merge", 3)

    # The same reply again changes nothing, and an empty reply (with its columns) deletes nothing.
    assert write(io_manager, reply, "merged_candles", partitions=(HOUR_A, HOUR_A), metadata=MERGE_METADATA)["rows_written"].value == 0
    write(io_manager, reply.iloc[:0], "merged_candles", partitions=(HOUR_A, HOUR_A), metadata=MERGE_METADATA)
    pd.testing.assert_frame_equal(read(io_manager, "merged_candles", partitions=(HOUR_A, HOUR_B)), got)


def test_failed_merge_leaves_previous_rows(io_manager):
    original = candles(HOUR_A)
    write(io_manager, original, "atomic_merge", partitions=(HOUR_A, HOUR_A), metadata=MERGE_METADATA)
    broken = candles(HOUR_A, minutes=5, base=900.0)
    broken.loc[7, "market"] = "KRW-\x00BAD"  # the staging COPY fails after the earlier rows went in

    with pytest.raises(Exception, match="0x00"):
        write(io_manager, broken, "atomic_merge", partitions=(HOUR_A, HOUR_A), metadata=MERGE_METADATA)

    pd.testing.assert_frame_equal(read(io_manager, "atomic_merge", partitions=(HOUR_A, HOUR_A)), _sorted(original))


def test_the_write_mode_is_declared_never_assumed(io_manager, postgres_resource):
    undeclared = {k: v for k, v in MERGE_METADATA.items() if k != "write_mode"}
    with pytest.raises(ValueError, match="undeclared_mode: asset metadata lacks 'write_mode'"):
        write(io_manager, candles(HOUR_A), "undeclared_mode", partitions=(HOUR_A, HOUR_A), metadata=undeclared)
    with pytest.raises(ValueError, match=r"write_mode 'upsert' is not one of \['replace', 'merge'\]"):
        write(io_manager, candles(HOUR_A), "undeclared_mode", partitions=(HOUR_A, HOUR_A), metadata={**undeclared, "write_mode": "upsert"})
    with pytest.raises(ValueError, match="merge matches rows by 'primary_key'"):
        write(io_manager, candles(HOUR_A), "undeclared_mode", partitions=(HOUR_A, HOUR_A), metadata={**MERGE_METADATA, "primary_key": []})
    table = f"{postgres_resource.db_schema}.undeclared_mode"
    assert postgres_resource.read_frame("SELECT to_regclass($1) AS t", (table,))["t"].isna().all()


def test_reading_an_unmaterialised_asset_names_it(io_manager, postgres_resource):
    with pytest.raises(MissingUpstreamTableError, match=r"upstream asset 'ghost_candles' was never materialised: table \S+\.ghost_candles does not exist"):
        read(io_manager, "ghost_candles", partitions=(HOUR_A, HOUR_A))


def test_new_columns_are_added_and_conflicting_types_refused(io_manager):
    write(io_manager, candles(HOUR_A), "evolving_candles", partitions=(HOUR_A, HOUR_A))
    wider = candles(HOUR_B).assign(trades=7)
    write(io_manager, wider, "evolving_candles", partitions=(HOUR_B, HOUR_B))
    got = read(io_manager, "evolving_candles", partitions=(HOUR_A, HOUR_B))
    assert got["trades"].isna().sum() == len(candles(HOUR_A)) and (got["trades"].dropna() == 7).all()
    # ints with a missing value arrive as floats: whole floats fit the bigint column exactly, a fraction does not
    write(io_manager, candles(HOUR_C).assign(trades=[1.0, None, 3.0, 4.0, 5.0, 6.0]), "evolving_candles", partitions=(HOUR_C, HOUR_C))
    with pytest.raises(TypeError, match=r"column 'trades' \(double\) does not fit \S+\.evolving_candles\.trades \(bigint\)"):
        write(io_manager, candles(HOUR_C).assign(trades=1.5), "evolving_candles", partitions=(HOUR_C, HOUR_C))

    with pytest.raises(SchemaDriftError, match=r"evolving_candles: .*close is double precision, expected text"):
        write(io_manager, candles(HOUR_C).assign(close="high"), "evolving_candles", partitions=(HOUR_C, HOUR_C))


def _alter(postgres: PostgresResource, table: str, column: str, new_type: str, using: str) -> None:
    """A column changed by hand (or by a release that typed it otherwise): the drift the IO manager must catch."""
    postgres.execute(f"ALTER TABLE {postgres.table_name(table)} ALTER COLUMN {column} TYPE {new_type} USING {using}")


SNAPSHOT = {"partition_expr": "as_of", "primary_key": ["as_of", "market"], "write_mode": WriteMode.REPLACE}


def _snapshot(hour: str, **values) -> pd.DataFrame:
    as_of = pd.Timestamp(hourly_partitions.time_window_for_partition_key(hour).start) + pd.Timedelta(minutes=5)
    return pd.DataFrame({"as_of": [as_of], "market": ["KRW-BTC"], **{name: [value] for name, value in values.items()}})


DRIFTS = [
    # (column, value the code writes, stored type after the hand change, USING, what the message says)
    pytest.param("touches", 8, "boolean", "touches <> 0", "touches is boolean, expected bigint", id="bigint-column-turned-boolean"),
    pytest.param("score", 57.58, "text", "score::text", "score is text, expected double precision", id="score-as-text"),
    pytest.param("caution", ["price_fluctuations"], "text", "caution::text", "caution is text, expected jsonb", id="caution-list-in-text"),
]


@pytest.mark.parametrize(("column", "value", "new_type", "using", "says"), DRIFTS)
def test_schema_drift_stops_the_write_naming_table_column_types_and_the_command(io_manager, postgres_resource, column, value,
                                                                                 new_type, using, says):
    table = f"drift_{column}"
    write(io_manager, _snapshot(HOUR_A, **{column: value}), table, partitions=(HOUR_A, HOUR_A), metadata=SNAPSHOT)
    _alter(postgres_resource, table, column, new_type, using)
    before = read_table(postgres_resource, table)

    with pytest.raises(SchemaDriftError) as refused:
        write(io_manager, _snapshot(HOUR_B, **{column: value}), table, partitions=(HOUR_B, HOUR_B), metadata=SNAPSHOT)
    message = str(refused.value)
    assert f"{postgres_resource.db_schema}.{table}: the stored table is not what this code writes (schema drift): {says}." in message
    assert "Nothing was written. Run `dantaro migrate`" in message
    pd.testing.assert_frame_equal(read_table(postgres_resource, table), before)  # the earlier row, and no new one


def _column_types(postgres: PostgresResource, table: str) -> dict[str, str]:
    rows = postgres.read_frame("SELECT column_name::text AS c, data_type::text AS t FROM information_schema.columns"
                               " WHERE table_schema = $1 AND table_name = $2", (postgres.db_schema, table))
    return dict(zip(rows["c"], rows["t"]))


def _picks(hour: str, reasons: list, caution: list) -> pd.DataFrame:
    as_of = pd.Timestamp(hourly_partitions.time_window_for_partition_key(hour).start) + pd.Timedelta(minutes=5)
    markets = ["KRW-BTC", "KRW-ETH", "KRW-XRP"][: len(reasons)]
    return pd.DataFrame({"as_of": pd.Series([as_of] * len(markets), dtype="datetime64[ns, UTC]"), "market": pd.Series(markets, dtype=object),
                         "score": pd.Series([61.5, 58.0, 55.0][: len(markets)], dtype=float),
                         "reasons": pd.Series(reasons, dtype=object), "caution": pd.Series(caution, dtype=object)})


@pytest.mark.parametrize("first", ["no-rows", "rows-without-a-value"])
def test_columns_no_stored_value_types_take_the_type_of_the_first_values(io_manager, postgres_resource, first):
    """A fresh install's first tick often has no pick: its empty frame cannot say reasons/caution are jsonb. The
    first picks give them their type, instead of drift (or, before the drift check, JSON text served as strings)."""
    table = f"first_picks_{first.replace('-', '_')}"
    first_frame = _picks(HOUR_A, [], []) if first == "no-rows" else _picks(HOUR_A, [None], [None])
    write(io_manager, first_frame, table, partitions=(HOUR_A, HOUR_A), metadata=SNAPSHOT)
    assert (_column_types(postgres_resource, table)["reasons"], _column_types(postgres_resource, table)["caution"]) == ("text", "text")

    picks = _picks(HOUR_B, [{"trend": {"score": 74.3}, "plan": {"reward_risk": 1.8}}, {"trend": {"score": 60.1}}],
                   [["price_fluctuations"], []])
    write(io_manager, picks, table, partitions=(HOUR_B, HOUR_B), metadata=SNAPSHOT)

    types = _column_types(postgres_resource, table)
    assert (types["reasons"], types["caution"], types["score"]) == ("jsonb", "jsonb", "double precision")
    got = read_table(postgres_resource, table, order=["as_of", "market"])
    assert got["reasons"].tolist()[-2:] == [{"trend": {"score": 74.3}, "plan": {"reward_risk": 1.8}}, {"trend": {"score": 60.1}}]
    assert got["caution"].tolist()[-2:] == [["price_fluctuations"], []]
    assert len(got) == len(first_frame) + 2  # the first write's rows (NULL in those columns) are kept


def test_a_column_holding_values_keeps_its_type_when_other_windows_bring_other_values(io_manager, postgres_resource):
    """Only a column without a single stored value is typed by arriving values: text in any row is drift, and the
    check is over the whole table, not the window the write replaces."""
    table = "reasons_as_text"
    write(io_manager, _picks(HOUR_A, ["trend up", None], [None, None]), table, partitions=(HOUR_A, HOUR_A), metadata=SNAPSHOT)
    before = read_table(postgres_resource, table)

    with pytest.raises(SchemaDriftError, match=r"reasons_as_text: .*reasons is text, expected jsonb\. Nothing was written"):
        write(io_manager, _picks(HOUR_B, [{"trend": {"score": 70.0}}], [["price_fluctuations"]]), table, partitions=(HOUR_B, HOUR_B),
              metadata=SNAPSHOT)

    pd.testing.assert_frame_equal(read_table(postgres_resource, table), before)
    assert (_column_types(postgres_resource, table)["reasons"], _column_types(postgres_resource, table)["caution"]) == ("text", "text")


def test_a_key_change_is_refused_until_a_migration_makes_it(io_manager, postgres_resource):
    """A key that grows by a column is a migration (``dantaro migrate``), not a side effect of a write."""
    write(io_manager, candles(HOUR_A), "growing_key", partitions=(HOUR_A, HOUR_A))
    wider = {**MERGE_METADATA, "primary_key": ["market", "candle_start", "source"]}
    two_sources = pd.concat([candles(HOUR_B).assign(source=name) for name in ("a", "b")], ignore_index=True)
    with pytest.raises(SchemaDriftError, match=r"growing_key: .*key is \(candle_start, market\), expected \(candle_start, market, source\)"):
        write(io_manager, two_sources, "growing_key", partitions=(HOUR_B, HOUR_B), metadata=wider)
    got = read(io_manager, "growing_key", partitions=(HOUR_A, HOUR_B))
    pd.testing.assert_frame_equal(got, _sorted(candles(HOUR_A)))
    assert "source" not in got  # not even the new column was added: the write's transaction rolled back


def test_unpartitioned_asset_replaces_the_whole_table(io_manager):
    metadata = {"primary_key": ["market"], "write_mode": WriteMode.REPLACE}
    write(io_manager, pd.DataFrame({"market": ["KRW-BTC", "KRW-ETH"], "tier": [1, 2]}), "market_tiers", metadata=metadata)
    write(io_manager, pd.DataFrame({"market": ["KRW-SOL"], "tier": [3]}), "market_tiers", metadata=metadata)
    got = read(io_manager, "market_tiers", metadata=metadata)
    pd.testing.assert_frame_equal(got, pd.DataFrame({"market": ["KRW-SOL"], "tier": [3]}))


CANDLES_1M = {"partition_expr": "candle_start", "primary_key": ["market", "candle_start"], "write_mode": WriteMode.MERGE}


@dg.asset(partitions_def=hourly_partitions, metadata=CANDLES_1M)
def graph_candles_1m(context: dg.AssetExecutionContext) -> pd.DataFrame:
    return candles(context.partition_key)


@dg.asset(partitions_def=hourly_partitions, metadata={"partition_expr": "as_of", "primary_key": ["as_of"], "write_mode": WriteMode.REPLACE})
def graph_breadth(context: dg.AssetExecutionContext) -> pd.DataFrame:
    as_of = context.partition_time_window.start
    return pd.DataFrame({"as_of": [pd.Timestamp(as_of)], "markets": [2]})


@dg.asset(
    partitions_def=hourly_partitions,
    ins={
        "graph_candles_1m": dg.AssetIn(partition_mapping=lookback_hours(2)),
        "graph_breadth": dg.AssetIn(partition_mapping=lookback_hours(2)),
    },
    metadata={"partition_expr": "as_of", "primary_key": ["as_of", "market"], "write_mode": WriteMode.REPLACE},
)
def graph_status(context: dg.AssetExecutionContext, graph_candles_1m: pd.DataFrame, graph_breadth: pd.DataFrame) -> pd.DataFrame:
    as_of = pd.Timestamp(context.partition_time_window.start) + pd.Timedelta(minutes=2)
    latest = graph_candles_1m.groupby("market", as_index=False).agg(hours=("candle_start", lambda t: t.dt.floor("h").nunique()), close=("close", "last"))
    return latest.assign(as_of=as_of, breadth_rows=len(graph_breadth))


def test_materialize_partitioned_graph_reads_lookback_in_one_query(io_resources, monkeypatch):
    with dg.DagsterInstance.ephemeral() as instance:  # closed after: its storage is not left to the garbage collector
        assets = [graph_candles_1m, graph_breadth, graph_status]
        for hour in (HOUR_A, HOUR_B, HOUR_C):
            dg.materialize([graph_candles_1m, graph_breadth], partition_key=hour, instance=instance, resources=io_resources)

        queries: list[str] = []
        original = PostgresResource.read_arrow

        def spy(self, sql, params=None, **kwargs):
            queries.append(sql)
            return original(self, sql, params, **kwargs)

        monkeypatch.setattr(PostgresResource, "read_arrow", spy)
        result = dg.materialize(assets, partition_key=HOUR_C, instance=instance, resources=io_resources, selection=[graph_status])
        assert result.success

        status = result.output_for_node("graph_status")
        assert status.set_index("market")["hours"].to_dict() == {"KRW-BTC": 3, "KRW-ETH": 3}
        assert (status["breadth_rows"] == 3).all()
        data_reads = [q for q in queries if not any(catalogue in q for catalogue in ("information_schema", "to_regclass", "pg_index"))]
        assert len(data_reads) == 2, data_reads  # one ranged query per input, not one per upstream partition
        metadata = result.asset_materializations_for_node("graph_status")[0].metadata
        assert metadata["dagster/partition_row_count"].value == 2 and not any("redis" in name for name in metadata)  # storing only


def test_read_table_is_the_one_reader_filtered_ordered_and_none_for_a_missing_table(io_manager, postgres_resource):
    write(io_manager, candles(HOUR_A), "read_candles", partitions=(HOUR_A, HOUR_A))
    eth = read_table(postgres_resource, "read_candles", where="market = $1 AND close > $2", params=["KRW-ETH", 104.0], order=["candle_start"])
    expected = candles(HOUR_A).query("market == 'KRW-ETH' and close > 104").reset_index(drop=True)
    pd.testing.assert_frame_equal(eth, expected[eth.columns])
    assert read_table(postgres_resource, "never_stored_candles") is None
    assert table_exists(postgres_resource, "read_candles") and not table_exists(postgres_resource, "never_stored_candles")

