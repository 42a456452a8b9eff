"""Support and resistance levels per market: swing-point clusters, volume profile nodes, floor pivots.

Three methods with a long track record feed candidate prices that chain into ATR-scaled zones on Upbit's
price grid, never overlapping, each with its evidence and a 0-100 strength; vectorised over all markets.
Methods and parameters: docs/analyses.md, "Support levels".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dantaro_assets.lib import indicators
from dantaro_assets.lib.analysis_inputs import AnalysisInputs, AnalysisResult, Lookback, flags, listed_at, ticks_at
from dantaro_assets.lib.point_in_time import MARKET, START
from dantaro_assets.lib.tick_grid import tick_for, to_grid

PIVOT_NAMES = ("P", "R1", "S1", "R2", "S2", "R3", "S3")
COLUMNS = ["as_of", MARKET, "side", "rank", "price", "level", "zone_low", "zone_high", "strength", "touches",
           "volume_share", "pivot", "distance_pct", "atr", "tick_size", "reasons"]
SNAPSHOT_COLUMNS = [*COLUMNS, "warning", "caution"]
SIDES = ("support", "resistance", "at_price")
RANKING = ("per market and side, rank 1 is the level nearest the price, then outwards; strength (0-100) "
           "grades each level's evidence and does not set the order; at_price is the zone the price trades in")


@dataclass(frozen=True)
class LevelParams:
    """Windows and weights of the method; defaults are the documented ones (docs/analyses.md)."""

    lookback_hours: int = 24 * 14   # two weeks of hourly bars for swings and the volume profile
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

    @property
    def max_zone_atr(self) -> float:
        """The widest zone in ATR (``MAX_ZONE_ATR`` with the defaults): one cut slice and its two margins."""
        return self.max_width_atr + 2 * self.zone_atr

    @property
    def lookback(self) -> Lookback:
        """Hourly bars over ``lookback_hours``; 1-minute candles of the tick's hour (the forming hour) and the
        two before it (hours candles_1h may not hold yet); the previous day's bar for the pivots."""
        return Lookback(minute_hours=2, hourly_days=-(-self.lookback_hours // 24), daily_days=1, instruments=True)


LOOKBACK = LevelParams().lookback
MAX_ZONE_ATR = LevelParams().max_zone_atr  # 1.5: a merged zone keeps this much around its strongest level
WEIGHTS = {"touches": 0.40, "volume": 0.30, "pivot": 0.20, "recency": 0.10}
POSITION_DIGITS = 10  # a position in a market's range to 1e-10 of it: far above float noise, far below a tick


def levels_at(hourly: pd.DataFrame, daily: pd.DataFrame, price: pd.Series, as_of: pd.Timestamp,
              params: LevelParams = LevelParams(), stored_ticks: pd.Series | None = None) -> pd.DataFrame:
    """The nearest supports below and resistances above ``price`` for every market, and the zone it trades in, at ``as_of``.

    ``hourly``: bars usable at as_of (market, candle_start, open, high, low, close, volume, value, and
    optionally ``complete``: False for the forming bar, which then feeds only the volume profile);
    ``daily``: daily bars, of which only the previous UTC day is used (pivots); ``price``: last price
    per market (index market); ``stored_ticks``: Upbit's tick per market (``ticks_at``; the documented
    table where missing). Returns one row per level with the columns in ``COLUMNS``; ``pivot`` names the
    pivots in the level (comma-joined, or None) and ``reasons`` is a dict of the evidence.
    """
    as_of = pd.Timestamp(as_of)
    price = price.dropna()
    price = price[price > 0]
    bars = hourly[(hourly[START] >= as_of - pd.Timedelta(hours=params.lookback_hours)) & hourly[MARKET].isin(price.index)]
    bars = indicators.sort_candles(bars)
    if bars.empty:
        return empty_levels()
    codes, markets = pd.factorize(bars[MARKET])
    complete = bars["complete"].to_numpy(bool) if "complete" in bars else np.ones(len(bars), bool)
    closed = bars[complete].reset_index(drop=True)
    closed_codes = codes[complete]
    atr = _last_per_market(indicators.atr(closed, params.atr_period).to_numpy(), closed_codes, len(markets))
    candidates = _concat([_swing_candidates(closed, closed_codes, params), _volume_candidates(bars, codes, len(markets), params),
                          _pivot_candidates(daily, as_of, markets)])
    usable = np.isfinite(atr[candidates["code"]]) & (atr[candidates["code"]] > 0)
    if not usable.any():
        return empty_levels()
    levels = _cluster({k: v[usable] for k, v in candidates.items()}, atr, params)
    levels["volume_share"] = _volume_share(bars, codes, len(markets), levels)
    levels[MARKET] = markets.to_numpy()[levels["code"]]
    levels["price"] = price.reindex(levels[MARKET]).to_numpy()
    levels["atr"] = atr[levels["code"]]
    touched = levels["last_touch"].to_numpy() != _NO_TIME
    age_hours = np.where(touched, (as_of.value - levels["last_touch"].to_numpy()) / 3.6e12, np.inf)
    levels["recency"] = np.exp(-age_hours / params.recency_hours)
    levels["strength"] = strength(levels, params)
    stored = pd.Series(dtype=float) if stored_ticks is None else stored_ticks
    levels["tick_size"] = tick_for(pd.Series(levels["price"].to_numpy(), index=levels[MARKET].to_numpy()), stored)
    return _nearest(levels, as_of, params)


def compute_support_levels(inputs: AnalysisInputs, ticks: pd.DatetimeIndex, params: LevelParams = LevelParams()) -> AnalysisResult:
    """Every tick's levels (``SNAPSHOT_COLUMNS``) for the markets of the latest universe day <= the tick.

    Without a universe day <= the tick every market with candles counts. Each row carries its market's
    ``warning`` flag of that day and ``caution`` (any of Upbit's caution flags); ``tick_size`` is the
    market's order price unit at the price (upbit_instruments' newest day <= the tick, else the
    documented KRW table), the grid every level price sits on.
    """
    frames = []
    for as_of in ticks:
        hourly = inputs.history.hourly(as_of)
        price = inputs.history.price(as_of)
        listed = listed_at(inputs.universe, as_of)
        if listed is not None:
            price = price[price.index.isin(listed.index)]
        levels = levels_at(hourly, inputs.history.daily(as_of, hourly), price, as_of, params, ticks_at(inputs.instruments, as_of))
        flagged = flags(listed) if listed is not None else pd.DataFrame({"warning": [], "caution": []}, dtype=bool)
        levels = levels.join(flagged.reindex(levels[MARKET]).fillna(False).astype(bool).reset_index(drop=True))
        frames.append(levels)
    if not frames:
        return AnalysisResult(empty_levels().assign(warning=pd.Series(dtype=bool), caution=pd.Series(dtype=bool)))
    return AnalysisResult(pd.concat(frames, ignore_index=True))


def strength(levels: pd.DataFrame, params: LevelParams = LevelParams()) -> pd.Series:
    """0-100: 40 touches (full at ``touches_full``), 30 volume share (full at ``volume_full``), 20 pivot, 10 recency.

    A lone pivot scores 20, the reporting threshold: floor pivots are reported even without other evidence.
    """
    score = (WEIGHTS["touches"] * np.minimum(levels["touches"] / params.touches_full, 1.0)
             + WEIGHTS["volume"] * np.minimum(levels["volume_share"] / params.volume_full, 1.0)
             + WEIGHTS["recency"] * levels["recency"]
             + WEIGHTS["pivot"] * levels["pivot"].notna())
    return (100.0 * score).clip(0.0, 100.0).round(2)


_NO_TIME = np.iinfo(np.int64).min  # "no swing" in the int64 nanosecond time column (below every real time)
SWING, POC, HVN, PIVOT = 0, 1, 2, 3
# Pivot names of every bit mask (bit i = PIVOT_NAMES[i]); None when a level holds no pivot.
_PIVOT_LABELS = np.array([",".join(n for i, n in enumerate(PIVOT_NAMES) if mask >> i & 1) or None
                          for mask in range(1 << len(PIVOT_NAMES))], dtype=object)


def _candidates(code: np.ndarray, price: np.ndarray, kind: int, time: np.ndarray | None = None,
                pivot_bit: int = 0) -> dict[str, np.ndarray]:
    """Candidate prices of one kind as arrays; ``time`` (ns) is when a swing happened."""
    size = len(code)
    return {"code": np.asarray(code, dtype=np.int64), "price": np.asarray(price, dtype=float),
            "kind": np.full(size, kind, dtype=np.int8),
            "time": np.full(size, _NO_TIME, dtype=np.int64) if time is None else np.asarray(time, dtype=np.int64),
            "pivot": np.full(size, pivot_bit, dtype=np.int64)}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _last_per_market(values: np.ndarray, codes: np.ndarray, markets: int) -> np.ndarray:
    """The last row's value of each market code (NaN for a market without rows)."""
    out = np.full(markets, np.nan)
    if len(codes):
        last = np.flatnonzero(np.r_[codes[1:] != codes[:-1], True])
        out[codes[last]] = values[last]
    return out


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


def _swing_candidates(closed: pd.DataFrame, codes: np.ndarray, params: LevelParams) -> dict[str, np.ndarray]:
    """Swing highs and lows: strictly above (below) the bars to the left, at least as high (low) as those to the right."""
    high, low = closed["high"].to_numpy(), closed["low"].to_numpy()
    is_high = np.ones(len(closed), bool)
    is_low = np.ones(len(closed), bool)
    for step in range(1, params.swing_bars + 1):
        for offset, strict in ((-step, True), (step, False)):
            h, lo = _neighbour(high, codes, offset), _neighbour(low, codes, offset)
            is_high &= (high > h) if strict else (high >= h)
            is_low &= (low < lo) if strict else (low <= lo)
    times = closed[START].to_numpy(dtype="datetime64[ns]").view(np.int64)
    return _concat([_candidates(codes[is_high], high[is_high], SWING, times[is_high]),
                    _candidates(codes[is_low], low[is_low], SWING, times[is_low])])


def _profile(bars: pd.DataFrame, codes: np.ndarray, markets: int, params: LevelParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turnover by typical-price bin per market: (bin lows, bin width, turnover[market, bin])."""
    lows = np.full(markets, np.inf)
    np.minimum.at(lows, codes, bars["low"].to_numpy())
    highs = np.full(markets, -np.inf)
    np.maximum.at(highs, codes, bars["high"].to_numpy())
    width = np.maximum(highs - lows, 1e-12) / params.profile_bins
    typical = ((bars["high"] + bars["low"] + bars["close"]) / 3.0).to_numpy()
    bin_index = np.clip(((typical - lows[codes]) / width[codes]).astype(int), 0, params.profile_bins - 1)
    turnover = np.bincount(codes * params.profile_bins + bin_index, weights=bars["value"].to_numpy(),
                           minlength=markets * params.profile_bins).reshape(markets, params.profile_bins)
    return lows, width, turnover


def _volume_candidates(bars: pd.DataFrame, codes: np.ndarray, markets: int, params: LevelParams) -> dict[str, np.ndarray]:
    """The point of control and high-volume nodes of each market.

    A node is a local maximum of the 3-bin smoothed profile holding >= ``node_ratio`` x the mean bin.
    """
    lows, width, turnover = _profile(bars, codes, markets, params)
    # A 3-bin moving average first, so that binning noise of a flat profile makes no node.
    edged = np.pad(turnover, ((0, 0), (1, 1)), mode="edge")
    smooth = (edged[:, :-2] + edged[:, 1:-1] + edged[:, 2:]) / 3.0
    padded = np.pad(smooth, ((0, 0), (1, 1)), constant_values=-1.0)
    local_max = (smooth >= padded[:, :-2]) & (smooth >= padded[:, 2:])
    mean = turnover.mean(axis=1, keepdims=True)
    node = local_max & (smooth >= params.node_ratio * mean) & (turnover > 0)
    poc = turnover.argmax(axis=1)
    node[np.arange(markets), poc] = turnover.max(axis=1) > 0
    rows, bins = np.nonzero(node)
    centre = lows[rows] + (bins + 0.5) * width[rows]
    is_poc = bins == poc[rows]
    return _concat([_candidates(rows[is_poc], centre[is_poc], POC), _candidates(rows[~is_poc], centre[~is_poc], HVN)])


def _pivot_candidates(daily: pd.DataFrame, as_of: pd.Timestamp, markets: pd.Index) -> dict[str, np.ndarray]:
    """Classic floor-trader pivots of the UTC day before ``as_of``'s day."""
    previous = daily[(daily[START] == as_of.floor("D") - pd.Timedelta(days=1)) & daily[MARKET].isin(markets)]
    code = markets.get_indexer(previous[MARKET])
    h, l, c = previous["high"].to_numpy(), previous["low"].to_numpy(), previous["close"].to_numpy()
    p = (h + l + c) / 3.0
    values = {"P": p, "R1": 2 * p - l, "S1": 2 * p - h, "R2": p + (h - l), "S2": p - (h - l),
              "R3": h + 2 * (p - l), "S3": l - 2 * (h - p)}
    return _concat([_candidates(code, values[name], PIVOT, pivot_bit=1 << i) for i, name in enumerate(PIVOT_NAMES)])


def _cluster(candidates: dict[str, np.ndarray], atr: np.ndarray, params: LevelParams) -> pd.DataFrame:
    """Chain candidates closer than ``cluster_atr`` x ATR into levels and summarise each level's evidence.

    Sorted by (market, price), a level starts where the market changes, where the gap to the previous
    candidate exceeds the tolerance, or where its chain passes another ``max_width_atr`` x ATR; every
    summary is then one ``reduceat`` over the level starts.
    """
    order = np.lexsort((candidates["price"], candidates["code"]))
    code, price = candidates["code"][order], candidates["price"][order]
    kind, time, pivot = candidates["kind"][order], candidates["time"][order], candidates["pivot"][order]
    new_market = np.r_[True, code[1:] != code[:-1]]
    new_chain = new_market | np.r_[True, np.diff(price) > params.cluster_atr * atr[code][1:]]
    chain_start = np.maximum.accumulate(np.where(new_chain, np.arange(len(price)), 0))
    width_slice = np.floor((price - price[chain_start]) / (params.max_width_atr * atr[code])).astype(np.int64)
    starts = np.flatnonzero(new_chain | np.r_[True, width_slice[1:] != width_slice[:-1]])
    level_code = code[starts]
    count = np.diff(np.r_[starts, len(price)])
    levels = pd.DataFrame({
        "code": level_code,
        "level": np.add.reduceat(price, starts) / count,
        "low": price[starts],
        "high": np.maximum.reduceat(price, starts),
        "touches": np.add.reduceat((kind == SWING).astype(np.int64), starts),
        "last_touch": np.maximum.reduceat(time, starts),
        "poc": np.maximum.reduceat(kind == POC, starts),
        "hvn": np.maximum.reduceat(kind == HVN, starts),
        "pivot_mask": np.bitwise_or.reduceat(pivot, starts),
    })
    levels["pivot"] = _PIVOT_LABELS[levels["pivot_mask"]]
    levels["node"] = np.where(levels["poc"], "poc", np.where(levels["hvn"], "hvn", None))
    margin = params.zone_atr * atr[level_code]
    levels["zone_low"] = levels["low"] - margin
    levels["zone_high"] = levels["high"] + margin
    return levels


def _normalised(prices: np.ndarray, low: np.ndarray, span: np.ndarray) -> np.ndarray:
    """``prices`` as a position in their market's range, 0 .. 0.5 (a code's range ends before the next code's)."""
    return np.round(np.clip((prices - low) / span, 0.0, 1.0), POSITION_DIGITS) * 0.5


def _volume_share(bars: pd.DataFrame, codes: np.ndarray, markets: int, levels: pd.DataFrame) -> np.ndarray:
    """Share of each market's lookback turnover traded with typical price inside the level's zone (a zone past the
    market's range takes the turnover at the range's edge).

    One sorted array over all markets (market code + normalised price) answers every zone with two
    binary searches, so the cost does not grow with markets x levels. Normalised prices are rounded to
    ``POSITION_DIGITS`` before the code is added: floating point leaves a market's equal prices a few units of
    the last place apart, and the sum with a larger code would merge them or not depending on the other
    markets in the call.
    """
    typical = ((bars["high"] + bars["low"] + bars["close"]) / 3.0).to_numpy()
    value = bars["value"].to_numpy()
    low = np.full(markets, np.inf)
    np.minimum.at(low, codes, typical)
    high = np.full(markets, -np.inf)
    np.maximum.at(high, codes, typical)
    span = np.maximum(high - low, 1e-12)
    key = codes + _normalised(typical, low[codes], span[codes])
    order = np.argsort(key, kind="stable")
    cumulative = np.r_[0.0, np.cumsum(value[order])]
    sorted_key = key[order]
    total = np.bincount(codes, weights=value, minlength=markets)
    level_codes = levels["code"].to_numpy()

    def position(bound: np.ndarray) -> np.ndarray:
        return level_codes + _normalised(bound, low[level_codes], span[level_codes])

    inside = (cumulative[np.searchsorted(sorted_key, position(levels["zone_high"].to_numpy()), "right")]
              - cumulative[np.searchsorted(sorted_key, position(levels["zone_low"].to_numpy()), "left")])
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total[level_codes] > 0, inside / total[level_codes], 0.0)
    return np.clip(share, 0.0, 1.0)


def _nearest(levels: pd.DataFrame, as_of: pd.Timestamp, params: LevelParams) -> pd.DataFrame:
    """The strong-enough levels on the grid, merged and capped, sided at the price; the ``per_side`` nearest each side."""
    levels = levels[levels["strength"] >= params.min_strength].copy()
    if levels.empty:
        return empty_levels()
    levels = merge_overlapping(on_the_grid(levels))
    levels = on_the_grid(cap_width(levels, params.max_zone_atr))
    levels["side"] = side_at_price(levels)
    levels = hold_the_price(levels)
    levels["distance_pct"] = (levels["level"] / levels["price"] - 1.0) * 100.0
    levels["distance"] = levels["distance_pct"].abs()
    levels = levels.sort_values([MARKET, "side", "distance"], kind="stable")
    levels["rank"] = levels.groupby([MARKET, "side"], sort=False).cumcount() + 1
    levels = levels[levels["rank"] <= params.per_side].reset_index(drop=True)
    levels["as_of"] = as_of
    levels["reasons"] = _reasons(levels)
    order = levels["side"].map({"support": 0, "at_price": 1, "resistance": 2})
    out = levels.assign(order=order).sort_values([MARKET, "order", "rank"], kind="stable")[COLUMNS]
    return out.astype({"rank": "int64", "touches": "int64"}).reset_index(drop=True)


def on_the_grid(levels: pd.DataFrame) -> pd.DataFrame:
    """Zones and levels on their row's price grid (``tick_size``, coarser beyond a band edge): bottoms and levels
    down, tops up, so a zone only widens and holds its level; what the API serves is what is stored."""
    ticks = levels["tick_size"].to_numpy()
    return levels.assign(zone_low=to_grid(levels["zone_low"].clip(lower=0.0), ticks, "down"),
                         zone_high=to_grid(levels["zone_high"], ticks, "up"),
                         level=to_grid(levels["level"], ticks, "down"))


def cap_width(levels: pd.DataFrame, max_zone_atr: float) -> pd.DataFrame:
    """A zone wider than ``max_zone_atr`` x ATR keeps that width around its level, inside the zone it had
    (a subset, so zones apart stay apart)."""
    width = max_zone_atr * levels["atr"]
    low = (levels["level"] - width / 2).clip(lower=levels["zone_low"], upper=levels["zone_high"] - width)
    wide = levels["zone_high"] - levels["zone_low"] > width
    return levels.assign(zone_low=levels["zone_low"].where(~wide, low), zone_high=levels["zone_high"].where(~wide, low + width))


def side_at_price(levels: pd.DataFrame) -> np.ndarray:
    """``support`` for a zone entirely below the price (as the grid shows it: its top under the price rounded
    down), ``resistance`` entirely above (its bottom over the price rounded up), else ``at_price``."""
    ticks = levels["tick_size"].to_numpy()
    below = levels["zone_high"].to_numpy() < to_grid(levels["price"], ticks, "down")
    above = levels["zone_low"].to_numpy() > to_grid(levels["price"], ticks, "up")
    return np.select([below, above], ["support", "resistance"], "at_price")


def hold_the_price(levels: pd.DataFrame) -> pd.DataFrame:
    """An ``at_price`` zone reaches over the price itself, not only over the price as the grid rounds it.

    A price off its row's grid (the market's stored tick coarser than the tick of the band the price trades
    in) lies between its rounded-down and rounded-up values; a zone ending between the two is sided neither
    support nor resistance, so it is widened to them (at most a tick, on the grid, never onto a neighbour:
    supports end below the rounded-down price, resistances begin above the rounded-up one)."""
    at = (levels["side"] == "at_price").to_numpy()
    ticks = levels["tick_size"].to_numpy()
    down, up = to_grid(levels["price"], ticks, "down"), to_grid(levels["price"], ticks, "up")
    return levels.assign(zone_low=np.where(at, np.minimum(levels["zone_low"].to_numpy(), down), levels["zone_low"].to_numpy()),
                         zone_high=np.where(at, np.maximum(levels["zone_high"].to_numpy(), up), levels["zone_high"].to_numpy()))


def merge_overlapping(levels: pd.DataFrame) -> pd.DataFrame:
    """Zones of one market that overlap or touch become one level: zone = their union, the strongest member's
    level price, strength, volume node and ATR, touches summed, pivots united, the newest touch.

    Overlaps arise where a long chain is cut into ``max_width_atr`` slices (each slice's zone reaches
    ``zone_atr`` into its neighbour) and between a support's and a resistance's margins near the price.
    Sorted by zone bottom within a market, a zone starts a new level when its bottom is above the highest
    top seen so far: on the grid, at least a tick apart.
    """
    if levels.empty:
        return levels.assign(merged=pd.Series(dtype="int64"))
    ordered = levels.sort_values([MARKET, "zone_low"], kind="stable").reset_index(drop=True)
    reach = ordered.groupby(MARKET, sort=False)["zone_high"].cummax()
    previous_reach = reach.groupby(ordered[MARKET], sort=False).shift()
    new_level = previous_reach.isna() | (ordered["zone_low"] > previous_reach)
    starts = np.flatnonzero(new_level.to_numpy())
    group = np.cumsum(new_level.to_numpy()) - 1
    strongest = ordered.groupby(group)["strength"].idxmax().to_numpy()
    merged = ordered.loc[strongest].reset_index(drop=True)
    merged["zone_low"] = np.minimum.reduceat(ordered["zone_low"].to_numpy(), starts)
    merged["zone_high"] = np.maximum.reduceat(ordered["zone_high"].to_numpy(), starts)
    merged["touches"] = np.add.reduceat(ordered["touches"].to_numpy(), starts)
    merged["last_touch"] = np.maximum.reduceat(ordered["last_touch"].to_numpy(), starts)
    merged["pivot"] = _PIVOT_LABELS[np.bitwise_or.reduceat(ordered["pivot_mask"].to_numpy(), starts)]
    merged["merged"] = np.diff(np.r_[starts, len(ordered)])
    return merged


def _reasons(levels: pd.DataFrame) -> list[dict]:
    """A JSON-able object per level naming its evidence (stored as jsonb, served by the API)."""
    records = levels[["touches", "last_touch", "volume_share", "node", "pivot", "atr", "merged"]].to_dict("records")
    return [{
        "swing_touches": int(r["touches"]),
        "last_touch": None if r["last_touch"] == _NO_TIME else pd.Timestamp(r["last_touch"], tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "volume_share": round(float(r["volume_share"]), 4),
        "volume_node": r["node"],
        "pivots": [] if r["pivot"] is None else r["pivot"].split(","),
        "atr": round(float(r["atr"]), 8),
        "merged_zones": int(r["merged"]),
    } for r in records]


def empty_levels() -> pd.DataFrame:
    """A frame with no level and the output's columns and types."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS})
    return frame.astype({"as_of": "datetime64[ns, UTC]", MARKET: object, "side": object, "rank": "int64",
                         "touches": "int64", "pivot": object, "reasons": object})
