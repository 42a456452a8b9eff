"""``dantaro candles delete`` on the real test database: the dry run changes nothing, --execute deletes exactly the selection."""

import pandas as pd
import pytest

from dantaro_assets.cli import main
from dantaro_assets.markets.assets import candles_1m
from dantaro_assets.markets.repair import CandleSelection, CandleSelectionError
from dantaro_assets_tests.lib.storage_data import candles, write

HOUR = "2025-09-29-00:00"  # no other test stores candles_1m here
DELETE = ["candles", "delete", "--asset", "candles_1m", "--start", "2025-09-29T00:00Z", "--end", "2025-09-29T00:02Z"]


def _stored(postgres_resource) -> pd.DataFrame:
    table = postgres_resource.table_name("candles_1m")
    sql = f"SELECT * FROM {table} WHERE candle_start >= $1 AND candle_start < $2 ORDER BY market, candle_start"
    return postgres_resource.read_frame(sql, (pd.Timestamp("2025-09-29T00:00Z"), pd.Timestamp("2025-09-29T01:00Z")))


@pytest.fixture
def stored(io_resources, postgres_resource) -> pd.DataFrame:
    """Three minutes of KRW-BTC, KRW-ETH and KRW-XRP written as candles_1m writes them."""
    metadata = candles_1m.metadata_by_key[candles_1m.key]
    frame = candles(HOUR, markets=("KRW-BTC", "KRW-ETH", "KRW-XRP"))
    write(io_resources["io_manager"], frame, "candles_1m", partitions=(HOUR, HOUR), metadata=metadata)
    before = _stored(postgres_resource)
    assert len(before) == 9
    return before


def test_the_dry_run_lists_the_selection_and_deletes_nothing(stored, postgres_resource, capsys):
    assert main([*DELETE, "--market", "KRW-BTC", "--market", "KRW-ETH"]) == 0
    out = capsys.readouterr().out
    assert "dry run: would delete 4 row(s)" in out and "nothing was deleted (add --execute" in out
    assert "| KRW-BTC  |      2 |" in out and "KRW-XRP" not in out
    pd.testing.assert_frame_equal(_stored(postgres_resource), stored)


def test_execute_deletes_exactly_the_selected_rows(stored, postgres_resource, capsys):
    assert main([*DELETE, "--market", "KRW-BTC", "--execute"]) == 0
    assert "deleted 2 row(s)" in capsys.readouterr().out
    selected = (stored["market"] == "KRW-BTC") & (stored["candle_start"] < pd.Timestamp("2025-09-29T00:02Z"))
    pd.testing.assert_frame_equal(_stored(postgres_resource), stored[~selected].reset_index(drop=True))

    assert main([*DELETE, "--all-markets", "--execute"]) == 0
    assert "deleted 4 row(s)" in capsys.readouterr().out
    assert _stored(postgres_resource)["candle_start"].eq(pd.Timestamp("2025-09-29T00:02Z")).all()


def test_a_bad_selection_is_refused_naming_what_is_wrong(stored, postgres_resource, capsys):
    naive_start = ["candles", "delete", "--asset", "candles_1m", "--start", "2025-09-29T00:00", "--end", "2025-09-29T01:00Z"]
    assert main([*naive_start, "--all-markets", "--execute"]) == 2
    assert "start 2025-09-29T00:00:00 has no UTC offset" in capsys.readouterr().err
    assert main([*DELETE[:3], "market_status", *DELETE[4:], "--all-markets", "--execute"]) == 2
    assert "'market_status' is not a candle asset" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # neither --market nor --all-markets: argparse refuses
        main([*DELETE, "--execute"])
    with pytest.raises(CandleSelectionError, match="is not before end"):
        CandleSelection("candles_1m", pd.Timestamp("2025-09-29T01:00Z"), pd.Timestamp("2025-09-29T00:00Z"), None)
    with pytest.raises(CandleSelectionError, match="market codes look like KRW-BTC"):
        CandleSelection("candles_1m", pd.Timestamp("2025-09-29T00:00Z"), pd.Timestamp("2025-09-29T01:00Z"), ("KRW-BTC'; DROP TABLE x; --",))
    pd.testing.assert_frame_equal(_stored(postgres_resource), stored)
