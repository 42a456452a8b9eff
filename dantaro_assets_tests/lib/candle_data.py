"""Candles for analysis tests: the recorded real Upbit files, and a seeded synthetic market with gaps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from dantaro_assets.lib.analysis_inputs import Lookback

CANDLE_COLUMNS = ["market", "candle_start", "open", "high", "low", "close", "volume", "value"]


def real_candles(data_dir: Path, interval: str) -> pd.DataFrame:
    """A recorded file (interval '1m', '1h' or '1d') in the storage contract's columns.

    The 1m and 1h files carry no KRW turnover: it is derived as close x volume (a stand-in, said so).
    """
    frame = pd.read_parquet(data_dir / f"candles_{interval}.parquet").rename(columns={"candle_start_utc": "candle_start"})
    if "value" not in frame:
        frame["value"] = frame["close"] * frame["volume"]
    return frame[CANDLE_COLUMNS].sort_values(["market", "candle_start"]).reset_index(drop=True)


def synthetic_minutes(markets: int, start: str, end: str, seed: int = 7, gap_share: float = 0.05) -> pd.DataFrame:
    """1-minute candles of ``markets`` random-walk markets over [start, end) with ``gap_share`` minutes missing."""
    rng = np.random.default_rng(seed)
    minutes = pd.date_range(start, end, freq="1min", inclusive="left", tz="UTC")
    names = [f"KRW-C{i:03d}" for i in range(markets)]
    base = 10.0 ** rng.uniform(1, 8, markets)
    btc = rng.normal(0, 0.0008, len(minutes))
    moves = 0.6 * btc[:, None] + rng.normal(0, 0.001, (len(minutes), markets))
    close = base * np.exp(np.cumsum(moves, axis=0))
    open_ = np.vstack([base, close[:-1]])
    spread = np.abs(rng.normal(0, 0.0007, close.shape))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    volume = rng.gamma(1.5, 100.0 / base, close.shape) * 1e6
    frame = pd.DataFrame({
        "market": np.tile(names, len(minutes)),
        "candle_start": np.repeat(minutes, markets),
        "open": open_.ravel(), "high": high.ravel(), "low": low.ravel(), "close": close.ravel(),
        "volume": volume.ravel(),
    })
    frame["value"] = frame["close"] * frame["volume"]
    kept = rng.random(len(frame)) >= gap_share
    return frame[kept].sort_values(["market", "candle_start"]).reset_index(drop=True)


def with_future_bars(bars: pd.DataFrame, after: pd.Timestamp, width: pd.Timedelta, count: int = 3,
                     factor: float = 10.0) -> pd.DataFrame:
    """``bars`` plus ``count`` bars per market starting at or after ``after`` (aligned to ``width``), each a copy of
    the market's last bar with prices and volume times ``factor``: stored candles an analysis at a tick before
    ``after`` must never read (a leak moves prices tenfold)."""
    last = bars.sort_values("candle_start").groupby("market").tail(1)
    first = after.ceil(width)
    future = pd.concat([last.assign(candle_start=first + k * width) for k in range(count)], ignore_index=True)
    future[["open", "high", "low", "close", "volume", "value"]] *= factor
    return pd.concat([bars[~(bars["candle_start"] >= first)], future], ignore_index=True).sort_values(
        ["market", "candle_start"], ignore_index=True)


def universe(markets: list[str], days: list[str], warning: tuple[str, ...] = (), caution: tuple[str, ...] = ()) -> pd.DataFrame:
    """upbit_markets rows of ``markets`` for each UTC day in ``days``; ``warning`` / ``caution`` markets carry a flag."""
    from dantaro_assets.lib.upbit import MARKET_COLUMNS

    rows = []
    for day in days:
        for market in markets:
            flags = {c: False for c in MARKET_COLUMNS[3:]}
            flags["warning"] = market in warning
            flags["caution_trading_volume_soaring"] = market in caution
            rows.append({"day": pd.Timestamp(day, tz="UTC"), "market": market, "korean_name": market,
                         "english_name": market, **flags})
    return pd.DataFrame(rows)[["day", *MARKET_COLUMNS]]


def store(io_manager, asset: str, frame: pd.DataFrame, *, partitions_def, first: str, last: str) -> None:
    """Write ``frame`` as ``asset``'s partitions first..last through the IO manager, as its asset would."""
    import dagster as dg

    from dantaro_assets.markets import assets as market_assets

    definition = getattr(market_assets, asset)
    metadata = definition.metadata_by_key[definition.key]
    time_column = metadata["partition_expr"]
    window_start = partitions_def.time_window_for_partition_key(first).start
    window_end = partitions_def.time_window_for_partition_key(last).end
    inside = frame[(frame[time_column] >= window_start) & (frame[time_column] < window_end)]
    with dg.build_output_context(
        asset_key=asset,
        definition_metadata=metadata,
        asset_partitions_def=partitions_def,
        asset_partition_key_range=dg.PartitionKeyRange(first, last),
        run_id="test-upstream",
    ) as context:
        io_manager.handle_output(context, inside.reset_index(drop=True))


def materialise(assets: list, partition: str, io_resources: dict, *, raise_on_error: bool = True):
    """``dg.materialize`` of an analysis asset and its publish step, their upstream candle assets present but not run.

    The Upbit client is only there because the upstream definitions declare it: it points at the
    unreachable test URL and is never called.
    """
    import dagster as dg

    from dantaro_assets.lib.upbit import UpbitClient
    from dantaro_assets.markets import assets as market_assets

    return dg.materialize([*dg.load_assets_from_modules([market_assets]), *assets], selection=assets, partition_key=partition,
                          resources={"upbit": UpbitClient(base_url="http://127.0.0.1:9"), **io_resources}, raise_on_error=raise_on_error)


def always_failing_schema(*_args, **_kwargs):
    """Stands in for an asset's pandera schema factory: every frame fails it, as corrupt rows would."""
    import pandera.pandas as pa

    return pa.DataFrameSchema(checks=[pa.Check(lambda frame: False, name="always fails")])


def analyses_lookback() -> Lookback:
    """The lookback that holds what market status, support levels and recommendations read."""
    from dantaro_assets.lib.analysis_inputs import Lookback
    from dantaro_assets.market_status.analysis import LOOKBACK as STATUS
    from dantaro_assets.recommendations.analysis import LOOKBACK as RECOMMENDATIONS
    from dantaro_assets.support_levels.analysis import LOOKBACK as LEVELS

    return Lookback.covering(STATUS, LEVELS, RECOMMENDATIONS)


def simulated_upstream(markets: int, hour: pd.Timestamp, seed: int = 7) -> dict[str, pd.DataFrame]:
    """Every upstream table of the analyses as the candle assets would hold it at ``hour`` + 1 h (closed candles only),
    from the replay's simulated market: ``markets`` markets (the replay's universe and flags), minutes of the hour and
    the lookback's, hours and days as far back as the widest lookback, and each market's tick (upbit_instruments)."""
    from dantaro_assets.lib import point_in_time as pit
    from dantaro_assets.lib.tick_grid import krw_tick_size
    from dantaro_assets.lib.upbit import MARKET_COLUMNS
    from dantaro_replay.simulated import SimulatedMarket

    sim = SimulatedMarket(markets, seed=seed)
    end = (hour + pit.HOUR).timestamp()
    day = hour.floor("D")

    def frame(unit_minutes: int, until: pd.Timestamp, count: int) -> pd.DataFrame:
        parts = []
        for spec in sim.specs:
            c = sim.candles(spec.info.market, unit_minutes, until.timestamp(), count, end)
            parts.append(pd.DataFrame({"market": spec.info.market, "candle_start": pd.to_datetime(c.start, unit="s", utc=True),
                                       "open": c.open, "high": c.high, "low": c.low, "close": c.close,
                                       "volume": c.volume, "value": c.value}))
        return pd.concat(parts, ignore_index=True)

    infos = sim.markets(hour.timestamp())
    listed = pd.DataFrame([(i.market, i.korean_name, i.english_name, i.warning, *i.caution) for i in infos], columns=MARKET_COLUMNS)
    listed = pd.concat([listed.assign(day=d) for d in (day - pd.Timedelta(days=1), day)], ignore_index=True)
    reach = analyses_lookback()
    hours = frame(60, hour, reach.hourly_days * 24 + 10)
    last_close = hours.sort_values("candle_start").groupby("market")["close"].last()
    instruments = pd.DataFrame({"market": last_close.index, "tick_size": krw_tick_size(last_close.to_numpy())})
    return {
        "candles_1m": frame(1, hour + pit.HOUR, (reach.minute_hours + 1) * 60),
        "candles_1h": hours,
        "candles_1d": frame(24 * 60, day, 2),
        "upbit_markets": listed[["day", *MARKET_COLUMNS]],
        "upbit_instruments": pd.concat([instruments.assign(day=d) for d in (day - pd.Timedelta(days=1), day)], ignore_index=True),
    }


def simulated_books(markets: int, at: pd.Timestamp, seed: int = 7) -> pd.DataFrame:
    """``orderbook_top``'s rows for the books of ``simulated_upstream``'s market fetched at ``at``: the replay's
    ``/v1/orderbook`` payload, parsed as the asset parses it."""
    from dantaro_assets.lib.upbit.parsing import parse_orderbook
    from dantaro_replay.payloads import BOOK_UNITS, orderbook_entry
    from dantaro_replay.simulated import SimulatedMarket

    sim = SimulatedMarket(markets, seed=seed)
    names = [spec.info.market for spec in sim.specs]
    payload = [orderbook_entry(sim, market, at.timestamp(), BOOK_UNITS) for market in names]
    return parse_orderbook(payload, endpoint="/v1/orderbook", markets=names).assign(as_of=at)
