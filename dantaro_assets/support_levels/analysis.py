"""Support and resistance levels per market: swing-point clusters, volume profile nodes, floor pivots.

Three methods with a long track record feed one set of candidate prices per market:
- swing points (fractals): a closed hourly bar whose high (low) is the extreme of the ``swing_bars``
  bars either side; where price turned before, it tends to react again (a former high below the
  price acts as support: role reversal);
- volume profile: hourly KRW turnover binned by typical price (H+L+C)/3 over the lookback (40 bins);
  the point of control (largest bin) and high-volume nodes (local maxima of the 3-bin smoothed
  profile with >= 1.5x the mean bin) are prices where the market accepted trade;
- classic floor-trader pivots of the previous UTC day: P = (H+L+C)/3, R1 = 2P-L, S1 = 2P-H,
  R2 = P+(H-L), S2 = P-(H-L), R3 = H+2(P-L), S3 = L-2(H-P).
Candidates closer than ``cluster_atr`` x ATR(14, hourly) chain into one level (single-linkage along
the price axis, ATR-scaled so the tolerance follows each coin's volatility); a chain wider than
``max_width_atr`` x ATR is cut into slices of that width so dense swings cannot make a huge zone. Each level gets a zone,
its evidence and a 0-100 strength (see ``strength``). Everything is vectorised over all markets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dantaro_assets.lib import indicators
from dantaro_assets.lib.point_in_time import CandleHistory

MARKET = "market"
START = "candle_start"
PIVOT_NAMES = ("P", "R1", "S1", "R2", "S2", "R3", "S3")
COLUMNS = ["as_of", MARKET, "side", "rank", "price", "level", "zone_low", "zone_high", "strength", "touches",
           "volume_share", "pivot", "distance_pct", "atr", "reasons"]
SNAPSHOT_COLUMNS = [*COLUMNS, "warning"]


@dataclass(frozen=True)
class LevelParams:
    """Windows and weights of the method; defaults are the documented ones (README)."""

    lookback_hours: int = 24 * 30   # hourly bars considered for swings and the volume profile
    swing_bars: int = 3             # a swing high/low is the extreme of 3 closed bars either side
    atr_period: int = 14            # Wilder ATR on hourly bars sets every tolerance
    cluster_atr: float = 0.5        # candidates closer than 0.5 ATR merge into one level
    max_width_atr: float = 1.0      # ... but a level spans at most 1 ATR (a long chain is cut into 1-ATR slices)
    zone_atr: float = 0.25          # a zone extends 0.25 ATR beyond its outermost candidates
    profile_bins: int = 40          # volume profile resolution over the lookback's price range
    node_ratio: float = 1.5         # a high-volume node holds >= 1.5x the mean bin turnover
    recency_hours: float = 24 * 7   # a touch's weight decays as exp(-age / 1 week)
    touches_full: int = 4           # 4 swing touches give the full touch score
    volume_full: float = 0.10       # 10 % of the lookback's turnover inside the zone gives the full volume score
    min_strength: float = 20.0      # weaker levels are not reported
    per_side: int = 3               # nearest levels kept per side


WEIGHTS = {"touches": 0.40, "volume": 0.30, "pivot": 0.20, "recency": 0.10}


def compute_support_levels(hourly: pd.DataFrame, daily: pd.DataFrame, price: pd.Series, as_of: pd.Timestamp,
                           params: LevelParams = LevelParams()) -> pd.DataFrame:
    """The nearest supports below and resistances above ``price`` for every market, at ``as_of``.

    ``hourly``: bars usable at as_of (market, candle_start, open, high, low, close, volume, value, and
    optionally ``complete``: False for the forming bar, which then feeds only the volume profile);
    ``daily``: daily bars, of which only the previous UTC day is used (pivots); ``price``: last price
    per market (index market). Returns one row per level with the columns in ``COLUMNS``; ``pivot``
    names the pivots in the level (comma-joined, or None) and ``reasons`` is a dict of the evidence.
    """
    as_of = pd.Timestamp(as_of)
    price = price.dropna()
    price = price[price > 0]
    bars = hourly[(hourly[START] >= as_of - pd.Timedelta(hours=params.lookback_hours)) & hourly[MARKET].isin(price.index)]
    bars = indicators.sort_candles(bars)
    if bars.empty:
        return empty_levels()
    complete = bars["complete"].to_numpy(bool) if "complete" in bars else np.ones(len(bars), bool)
    closed = bars[complete].reset_index(drop=True)
    atr = indicators.atr(closed, params.atr_period).groupby(closed[MARKET]).last().dropna()
    atr = atr[atr > 0]
    markets = atr.index
    candidates = pd.concat([_swing_candidates(closed, params), _volume_candidates(bars, params),
                            _pivot_candidates(daily, as_of)], ignore_index=True)
    candidates = candidates[candidates[MARKET].isin(markets)]
    levels = _cluster(candidates, atr, params)
    levels["volume_share"] = _volume_share(bars, levels)
    levels["price"] = price.reindex(levels[MARKET]).to_numpy()
    levels["atr"] = atr.reindex(levels[MARKET]).to_numpy()
    age = (as_of - levels["last_touch"]).dt.total_seconds() / 3600.0
    levels["recency"] = np.exp(-age / params.recency_hours).fillna(0.0)
    levels["strength"] = strength(levels, params)
    return _nearest(levels, as_of, params)


def levels_at_ticks(history: CandleHistory, universe: pd.DataFrame, ticks: pd.DatetimeIndex,
                    params: LevelParams = LevelParams()) -> pd.DataFrame:
    """Every tick's levels (``SNAPSHOT_COLUMNS``) for the markets of the latest universe day <= the tick.

    ``universe`` is upbit_markets rows (day, market, warning, ...); without a day <= the tick every
    market with candles counts. Each row carries its market's ``warning`` flag of that day.
    """
    frames = []
    for as_of in ticks:
        hourly = history.hourly(as_of)
        price = history.price(as_of)
        days = universe["day"][universe["day"] <= as_of]
        members = universe[universe["day"] == days.max()].set_index(MARKET) if len(days) else None
        if members is not None:
            price = price[price.index.isin(members.index)]
        levels = compute_support_levels(hourly, history.daily(as_of, hourly), price, as_of, params)
        flags = members["warning"] if members is not None else pd.Series(dtype=bool)
        frames.append(levels.assign(warning=flags.reindex(levels[MARKET]).fillna(False).to_numpy(bool)))
    if not frames:
        return empty_levels().assign(warning=pd.Series(dtype=bool))
    return pd.concat(frames, ignore_index=True)


def strength(levels: pd.DataFrame, params: LevelParams = LevelParams()) -> pd.Series:
    """0-100: 40 touches (full at ``touches_full``), 30 volume share (full at ``volume_full``), 20 pivot, 10 recency.

    A lone pivot scores 20, the reporting threshold: floor pivots are reported even without other evidence.
    """
    score = (WEIGHTS["touches"] * np.minimum(levels["touches"] / params.touches_full, 1.0)
             + WEIGHTS["volume"] * np.minimum(levels["volume_share"] / params.volume_full, 1.0)
             + WEIGHTS["recency"] * levels["recency"]
             + WEIGHTS["pivot"] * levels["pivot"].notna())
    return (100.0 * score).clip(0.0, 100.0).round(2)


def _candidates(market, price, kind, time=None, pivot=None) -> pd.DataFrame:
    """Candidate prices of one kind; ``time`` is when a swing happened, ``pivot`` the pivot's name."""
    frame = pd.DataFrame({MARKET: np.asarray(market, dtype=object), "candidate": np.asarray(price, dtype=float)})
    frame["kind"] = kind
    frame["time"] = pd.to_datetime(pd.Series(pd.NaT if time is None else time, index=frame.index), utc=True)
    frame["pivot"] = pivot
    return frame


def _neighbour(values: np.ndarray, codes: np.ndarray, offset: int) -> np.ndarray:
    """values[i + offset] where that row belongs to the same market, else NaN."""
    out = np.full(len(values), np.nan)
    if offset > 0:
        same = codes[offset:] == codes[:-offset]
        out[:-offset] = np.where(same, values[offset:], np.nan)
    else:
        same = codes[:offset] == codes[-offset:]
        out[-offset:] = np.where(same, values[:offset], np.nan)
    return out


def _swing_candidates(closed: pd.DataFrame, params: LevelParams) -> pd.DataFrame:
    """Swing highs and lows: strictly above (below) the bars to the left, at least as high (low) as those to the right."""
    codes = pd.factorize(closed[MARKET])[0]
    high, low = closed["high"].to_numpy(), closed["low"].to_numpy()
    is_high = np.ones(len(closed), bool)
    is_low = np.ones(len(closed), bool)
    for step in range(1, params.swing_bars + 1):
        for offset, strict in ((-step, True), (step, False)):
            h, lo = _neighbour(high, codes, offset), _neighbour(low, codes, offset)
            is_high &= (high > h) if strict else (high >= h)
            is_low &= (low < lo) if strict else (low <= lo)
    highs, lows = closed[is_high], closed[is_low]
    return pd.concat([_candidates(highs[MARKET], highs["high"], "swing_high", highs[START].to_numpy()),
                      _candidates(lows[MARKET], lows["low"], "swing_low", lows[START].to_numpy())], ignore_index=True)


def _profile(bars: pd.DataFrame, params: LevelParams) -> tuple[pd.Index, np.ndarray, np.ndarray, np.ndarray]:
    """Turnover by typical-price bin per market: (markets, bin lows, bin width, turnover[market, bin])."""
    codes, markets = pd.factorize(bars[MARKET])
    lows = bars.groupby(codes)["low"].min().to_numpy()
    highs = bars.groupby(codes)["high"].max().to_numpy()
    width = np.maximum(highs - lows, 1e-12) / params.profile_bins
    typical = ((bars["high"] + bars["low"] + bars["close"]) / 3.0).to_numpy()
    bin_index = np.clip(((typical - lows[codes]) / width[codes]).astype(int), 0, params.profile_bins - 1)
    turnover = np.bincount(codes * params.profile_bins + bin_index, weights=bars["value"].to_numpy(),
                           minlength=len(markets) * params.profile_bins).reshape(len(markets), params.profile_bins)
    return markets, lows, width, turnover


def _volume_candidates(bars: pd.DataFrame, params: LevelParams) -> pd.DataFrame:
    """The point of control and high-volume nodes of each market.

    A node is a local maximum of the 3-bin smoothed profile holding >= ``node_ratio`` x the mean bin.
    """
    markets, lows, width, turnover = _profile(bars, params)
    # A 3-bin moving average first, so that binning noise of a flat profile makes no node.
    edged = np.pad(turnover, ((0, 0), (1, 1)), mode="edge")
    smooth = (edged[:, :-2] + edged[:, 1:-1] + edged[:, 2:]) / 3.0
    padded = np.pad(smooth, ((0, 0), (1, 1)), constant_values=-1.0)
    local_max = (smooth >= padded[:, :-2]) & (smooth >= padded[:, 2:])
    mean = turnover.mean(axis=1, keepdims=True)
    node = local_max & (smooth >= params.node_ratio * mean) & (turnover > 0)
    node[np.arange(len(markets)), turnover.argmax(axis=1)] = turnover.max(axis=1) > 0
    rows, bins = np.nonzero(node)
    centre = lows[rows] + (bins + 0.5) * width[rows]
    kind = np.where(bins == turnover.argmax(axis=1)[rows], "poc", "hvn")
    return _candidates(markets.to_numpy()[rows], centre, kind)


def _pivot_candidates(daily: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Classic floor-trader pivots of the UTC day before ``as_of``'s day."""
    previous = daily[daily[START] == as_of.floor("D") - pd.Timedelta(days=1)]
    if previous.empty:
        return _candidates([], [], "pivot")
    h, l, c = previous["high"].to_numpy(), previous["low"].to_numpy(), previous["close"].to_numpy()
    p = (h + l + c) / 3.0
    values = {"P": p, "R1": 2 * p - l, "S1": 2 * p - h, "R2": p + (h - l), "S2": p - (h - l),
              "R3": h + 2 * (p - l), "S3": l - 2 * (h - p)}
    markets = previous[MARKET].to_numpy()
    return pd.concat([_candidates(markets, values[name], "pivot", pivot=name) for name in PIVOT_NAMES], ignore_index=True)


def _cluster(candidates: pd.DataFrame, atr: pd.Series, params: LevelParams) -> pd.DataFrame:
    """Chain candidates closer than ``cluster_atr`` x ATR into levels and summarise each level's evidence."""
    frame = candidates.sort_values([MARKET, "candidate"], kind="stable").reset_index(drop=True)
    tolerance = params.cluster_atr * atr.reindex(frame[MARKET]).to_numpy()
    gap = frame["candidate"].diff().to_numpy()
    new_market = frame[MARKET].ne(frame[MARKET].shift()).to_numpy()
    chain = np.cumsum(new_market | ~(gap <= tolerance))
    chain_low = frame.groupby(chain)["candidate"].transform("min").to_numpy()
    width = params.max_width_atr * atr.reindex(frame[MARKET]).to_numpy()
    slice_index = np.floor((frame["candidate"].to_numpy() - chain_low) / width).astype(np.int64)
    frame["level_id"] = pd.factorize(pd.MultiIndex.from_arrays([chain, slice_index]))[0]
    swing = frame["kind"].str.startswith("swing")
    frame["swing_time"] = frame["time"].where(swing)
    frame["is_swing"] = swing.astype(int)
    frame["is_poc"] = (frame["kind"] == "poc").astype(int)
    frame["is_hvn"] = (frame["kind"] == "hvn").astype(int)
    grouped = frame.groupby("level_id", sort=False)
    levels = grouped.agg(market=(MARKET, "first"), level=("candidate", "mean"), low=("candidate", "min"),
                         high=("candidate", "max"), touches=("is_swing", "sum"), last_touch=("swing_time", "max"),
                         poc=("is_poc", "max"), hvn=("is_hvn", "max")).reset_index(drop=True)
    levels["node"] = np.where(levels["poc"] > 0, "poc", np.where(levels["hvn"] > 0, "hvn", None))
    pivots = frame.dropna(subset=["pivot"]).groupby("level_id", sort=False)["pivot"].agg(",".join)
    levels["pivot"] = pivots.reindex(grouped.size().index).to_numpy()
    margin = params.zone_atr * atr.reindex(levels[MARKET]).to_numpy()
    levels["zone_low"] = levels["low"] - margin
    levels["zone_high"] = levels["high"] + margin
    return levels


def _volume_share(bars: pd.DataFrame, levels: pd.DataFrame) -> np.ndarray:
    """Share of each market's lookback turnover traded with typical price inside the level's zone.

    One sorted array over all markets (market code + normalised price) answers every zone with two
    binary searches, so the cost does not grow with markets x levels.
    """
    codes, markets = pd.factorize(bars[MARKET])
    typical = ((bars["high"] + bars["low"] + bars["close"]) / 3.0).to_numpy()
    low = pd.Series(typical).groupby(codes).min().to_numpy()
    span = np.maximum(pd.Series(typical).groupby(codes).max().to_numpy() - low, 1e-12)
    key = codes + np.clip((typical - low[codes]) / span[codes], 0.0, 1.0) * 0.5
    order = np.argsort(key, kind="stable")
    cumulative = np.concatenate(([0.0], np.cumsum(bars["value"].to_numpy()[order])))
    sorted_key = key[order]
    total = np.bincount(codes, weights=bars["value"].to_numpy(), minlength=len(markets))
    level_codes = markets.get_indexer(levels[MARKET])
    lo = level_codes + np.clip((levels["zone_low"].to_numpy() - low[level_codes]) / span[level_codes], 0.0, 1.0) * 0.5
    hi = level_codes + np.clip((levels["zone_high"].to_numpy() - low[level_codes]) / span[level_codes], 0.0, 1.0) * 0.5
    inside = cumulative[np.searchsorted(sorted_key, hi, "right")] - cumulative[np.searchsorted(sorted_key, lo, "left")]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total[level_codes] > 0, inside / total[level_codes], 0.0)
    return np.clip(share, 0.0, 1.0)


def _nearest(levels: pd.DataFrame, as_of: pd.Timestamp, params: LevelParams) -> pd.DataFrame:
    """Keep the ``per_side`` nearest strong-enough levels each side of the price, with zones clipped at the price."""
    levels = levels[(levels["strength"] >= params.min_strength) & (levels["level"] != levels["price"])].copy()
    if levels.empty:
        return empty_levels()
    below = levels["level"] < levels["price"]
    levels["side"] = np.where(below, "support", "resistance")
    levels["zone_high"] = np.where(below, np.minimum(levels["zone_high"], levels["price"]), levels["zone_high"])
    levels["zone_low"] = np.where(below, levels["zone_low"], np.maximum(levels["zone_low"], levels["price"]))
    levels["distance_pct"] = (levels["level"] / levels["price"] - 1.0) * 100.0
    levels["distance"] = levels["distance_pct"].abs()
    levels = levels.sort_values([MARKET, "side", "distance"], kind="stable")
    levels["rank"] = levels.groupby([MARKET, "side"], sort=False).cumcount() + 1
    levels = levels[levels["rank"] <= params.per_side].reset_index(drop=True)
    levels["as_of"] = as_of
    levels["reasons"] = _reasons(levels)
    levels["pivot"] = levels["pivot"].astype(object).where(levels["pivot"].notna(), None)
    out = levels[COLUMNS].sort_values([MARKET, "side", "rank"], ascending=[True, False, True], kind="stable")
    return out.astype({"rank": "int64", "touches": "int64"}).reset_index(drop=True)


def _reasons(levels: pd.DataFrame) -> list[dict]:
    """A JSON-able object per level naming its evidence (stored as jsonb, served by the API)."""
    records = levels[["touches", "last_touch", "volume_share", "node", "pivot", "atr"]].to_dict("records")
    return [{
        "swing_touches": int(r["touches"]),
        "last_touch": None if pd.isna(r["last_touch"]) else r["last_touch"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "volume_share": round(float(r["volume_share"]), 4),
        "volume_node": None if pd.isna(r["node"]) else r["node"],
        "pivots": [] if r["pivot"] is None or pd.isna(r["pivot"]) else r["pivot"].split(","),
        "atr": round(float(r["atr"]), 8),
    } for r in records]


def empty_levels() -> pd.DataFrame:
    """A frame with no level and the output's columns and types."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS})
    return frame.astype({"as_of": "datetime64[ns, UTC]", MARKET: object, "side": object, "rank": "int64",
                         "touches": "int64", "pivot": object, "reasons": object})
