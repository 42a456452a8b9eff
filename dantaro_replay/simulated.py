"""A deterministic simulated Upbit KRW market of any size, computable for any minute on demand.

Every draw is seeded by (seed, market index, day, stream), so a market's history never depends on the
universe size, the request order or the clock; the model (GARCH daily paths, BTC-correlated intraday
bridges, Upbit's ticks, no-trade minutes): docs/replay.md, "Simulated market".
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import date, datetime, timezone

import numpy as np

from dantaro_replay.core import (
    CAUTION_KEYS,
    DAY_MINUTES,
    DAY_SECONDS,
    Candles,
    MarketInfo,
    aggregate,
    round_to_tick,
)

EPOCH = date(2017, 10, 1)
HORIZON = date(2032, 1, 1)
ANCHOR = date(2025, 9, 1)
_EPOCH_S = int(datetime(EPOCH.year, EPOCH.month, EPOCH.day, tzinfo=timezone.utc).timestamp())
_N_DAYS = (HORIZON - EPOCH).days
_ANCHOR_DAY = (ANCHOR - EPOCH).days

_BTC_DAILY_SD = 0.018  # long-run daily standard deviation of BTC's log return
_BOUNCE = 0.3  # trade-price noise around the efficient path, in minute standard deviations
_EXCURSION = 0.3  # high/low beyond open/close, in minute standard deviations (times |N(0,1)|)
# GARCH(1,1) persistence of daily variance: alpha (shock) + beta (memory) < 1.
_GARCH_ALPHA, _GARCH_BETA = 0.08, 0.90
# AR(1) intraday log-volatility: per-minute persistence and stationary standard deviation.
_VOL_PHI, _VOL_SD = 0.985, 0.45

# (ticker, english name, korean name, 2025-09-01 price KRW or 0 for random, beta, idio daily vol,
#  daily KRW turnover). The first four are the recorded markets; the rest are real Upbit KRW listings.
_MAJORS = [
    ("BTC", "Bitcoin", "비트코인", 150_800_000, 1.0, 0.0, 2.5e11),
    ("ETH", "Ethereum", "이더리움", 6_118_000, 1.15, 0.021, 3.0e11),
    ("XRP", "XRP", "엑스알피(리플)", 3_867, 1.05, 0.025, 3.8e11),
    ("SOL", "Solana", "솔라나", 279_500, 1.2, 0.025, 2.0e11),
]
_LISTED = [
    ("DOGE", "Dogecoin", "도지코인"), ("ADA", "Cardano", "에이다"), ("TRX", "TRON", "트론"),
    ("LINK", "Chainlink", "체인링크"), ("AVAX", "Avalanche", "아발란체"), ("XLM", "Stellar Lumens", "스텔라루멘"),
    ("DOT", "Polkadot", "폴카닷"), ("SUI", "Sui", "수이"), ("BCH", "Bitcoin Cash", "비트코인캐시"),
    ("HBAR", "Hedera", "헤데라"), ("SHIB", "Shiba Inu", "시바이누"), ("NEAR", "NEAR Protocol", "니어프로토콜"),
    ("APT", "Aptos", "앱토스"), ("ETC", "Ethereum Classic", "이더리움클래식"), ("POL", "Polygon Ecosystem Token", "폴리곤 에코시스템 토큰"),
    ("ATOM", "Cosmos", "코스모스"), ("ARB", "Arbitrum", "아비트럼"), ("SEI", "Sei", "세이"),
    ("ONDO", "Ondo Finance", "온도파이낸스"), ("AAVE", "Aave", "에이브"), ("UNI", "Uniswap", "유니스왑"),
    ("SAND", "The Sandbox", "샌드박스"), ("MANA", "Decentraland", "디센트럴랜드"), ("ALGO", "Algorand", "알고랜드"),
    ("EOS", "EOS", "이오스"), ("IMX", "Immutable", "이뮤터블엑스"), ("STX", "Stacks", "스택스"),
    ("AERGO", "Aergo", "아르고"), ("ZIL", "Zilliqa", "질리카"), ("GRT", "The Graph", "더그래프"),
    ("SXP", "Solar", "솔라"), ("QTUM", "Qtum", "퀀텀"), ("ICX", "ICON", "아이콘"),
    ("BTT", "BitTorrent", "비트토렌트"), ("CHZ", "Chiliz", "칠리즈"), ("ENS", "Ethereum Name Service", "이더리움네임서비스"),
    ("FLOW", "Flow", "플로우"), ("HIVE", "Hive", "하이브"), ("IOTA", "IOTA", "아이오타"),
    ("KAVA", "Kava", "카바"), ("MINA", "Mina", "미나"), ("NEO", "NEO", "네오"),
    ("ONT", "Ontology", "온톨로지"), ("SC", "Siacoin", "시아코인"), ("STORJ", "Storj", "스토리지"),
    ("THETA", "Theta Token", "쎄타토큰"), ("VET", "VeChain", "비체인"), ("WAVES", "Waves", "웨이브"),
    ("XEC", "eCash", "이캐시"), ("XTZ", "Tezos", "테조스"), ("ZRX", "0x Protocol", "제로엑스"),
    ("BAT", "Basic Attention Token", "베이직어텐션토큰"), ("GAS", "Gas", "가스"), ("GLM", "Golem", "골렘"),
    ("JST", "JUST", "저스트"), ("MASK", "Mask Network", "마스크네트워크"), ("MED", "MediBloc", "메디블록"),
    ("MVL", "MVL", "엠블"), ("ORBS", "Orbs", "오브스"), ("PUNDIX", "Pundi X", "펀디엑스"),
    ("SNT", "Status Network Token", "스테이터스네트워크토큰"), ("STEEM", "Steem", "스팀"), ("T", "Threshold", "쓰레스홀드"),
    ("TFUEL", "Theta Fuel", "쎄타퓨엘"), ("ANKR", "Ankr", "앵커"), ("ARDR", "Ardor", "아더"),
    ("ARK", "Ark", "아크"), ("ASTR", "Astar", "아스타"), ("AXS", "Axie Infinity", "엑시인피니티"),
    ("BLUR", "Blur", "블러"), ("CELO", "Celo", "셀로"), ("CKB", "Nervos Network", "너보스"),
    ("CRO", "Cronos", "크로노스"), ("CVC", "Civic", "시빅"), ("EGLD", "MultiversX", "멀티버스엑스"),
    ("ELF", "aelf", "엘프"), ("GMT", "STEPN", "스테픈"), ("GRS", "Groestlcoin", "그로스톨코인"),
    ("HUNT", "Hunt", "헌트"), ("ID", "SPACE ID", "스페이스아이디"), ("IOST", "IOST", "아이오에스티"),
    ("JUP", "Jupiter", "주피터"), ("KNC", "Kyber Network", "카이버네트워크"), ("LSK", "Lisk", "리스크"),
    ("META", "Metadium", "메타디움"), ("MOC", "Moss Coin", "모스코인"), ("MTL", "Metal", "메탈"),
    ("PENDLE", "Pendle", "펜들"), ("PEPE", "Pepe", "페페"), ("POLYX", "Polymesh", "폴리매쉬"),
    ("POWR", "Powerledger", "파워렛저"), ("PYTH", "Pyth Network", "피스네트워크"), ("RENDER", "Render", "렌더토큰"),
    ("STG", "Stargate Finance", "스타게이트파이낸스"), ("STMX", "StormX", "스톰엑스"), ("STRAX", "Stratis", "스트라티스"),
    ("TT", "ThunderCore", "썬더코어"), ("UPP", "Sentinel Protocol", "센티넬프로토콜"), ("W", "Wormhole", "웜홀"),
    ("WAXP", "WAX", "왁스"), ("ZETA", "ZetaChain", "제타체인"), ("ZRO", "LayerZero", "레이어제로"),
    ("1INCH", "1inch", "1인치네트워크"), ("AKT", "Akash Network", "아카시네트워크"), ("AUCTION", "Bounce", "바운스토큰"),
    ("BERA", "Berachain", "베라체인"), ("BIGTIME", "Big Time", "빅타임"), ("BONK", "Bonk", "봉크"),
    ("CARV", "CARV", "카브"), ("COMP", "Compound", "컴파운드"), ("COW", "CoW Protocol", "카우프로토콜"),
    ("CTC", "Creditcoin", "크레딧코인"), ("DRIFT", "Drift", "드리프트"), ("ENA", "Ethena", "에테나"),
    ("INJ", "Injective", "인젝티브"), ("KAITO", "Kaito", "카이토"), ("LAYER", "Solayer", "솔레이어"),
    ("ME", "Magic Eden", "매직에덴"), ("MOVE", "Movement", "무브먼트"), ("OM", "MANTRA", "만트라"),
    ("ORCA", "Orca", "오르카"), ("SAFE", "Safe", "세이프"), ("SIGN", "Sign", "사인"),
    ("TAIKO", "Taiko", "타이코"), ("TRUMP", "Official Trump", "오피셜트럼프"), ("UXLINK", "UXLINK", "유엑스링크"),
    ("VANA", "Vana", "바나"), ("VIRTUAL", "Virtuals Protocol", "버추얼프로토콜"), ("WCT", "WalletConnect Token", "월렛커넥트토큰"),
    ("G", "Gravity", "그래비티"), ("IQ", "IQ", "아이큐"), ("QKC", "QuarkChain", "쿼크체인"),
]
KNOWN_NAMES = {ticker: (english, korean) for ticker, english, korean, *_ in _MAJORS + _LISTED}
_HANGUL_LETTERS = dict(zip(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    ["에이", "비", "씨", "디", "이", "에프", "지", "에이치", "아이", "제이", "케이", "엘", "엠",
     "엔", "오", "피", "큐", "알", "에스", "티", "유", "브이", "더블유", "엑스", "와이", "지"],
))
_SYLLABLES_UPPER = ["BA", "BE", "BO", "DA", "DE", "DI", "FA", "GA", "GO", "KA", "KI", "KO", "LA", "LI",
                    "LU", "MA", "MI", "MO", "NA", "NE", "NO", "PA", "PI", "RA", "RE", "RO", "SA", "SI",
                    "TA", "TE", "TO", "VA", "VE", "XA", "ZE", "ZO"]


@dataclass(frozen=True)
class _Spec:
    info: MarketInfo
    price: float  # 2025-09-01 open, KRW
    beta: float
    idio_vol: float  # long-run daily standard deviation of the idiosyncratic return
    turnover: float  # typical daily KRW turnover
    liquidity: float  # expected trades-per-minute intensity at average activity


def _synthetic_ticker(rng: np.random.Generator, taken: set[str]) -> tuple[str, str, str]:
    while True:
        ticker = "".join(rng.choice(_SYLLABLES_UPPER, size=rng.integers(2, 4)))[: rng.integers(3, 6)]
        if ticker not in taken:
            taken.add(ticker)
            return ticker, ticker.capitalize() + " Network", "".join(_HANGUL_LETTERS[c] for c in ticker)


def _universe(n_markets: int, seed: int) -> list[_Spec]:
    specs: list[_Spec] = []
    taken = {t for t, *_ in _MAJORS} | {t for t, *_ in _LISTED}
    for index in range(n_markets):
        rng = np.random.default_rng([seed, index, 1])
        if index < len(_MAJORS):
            ticker, english, korean, price, beta, idio, turnover = _MAJORS[index]
            liquidity = 12.0
        else:
            if index - len(_MAJORS) < len(_LISTED):
                ticker, english, korean = _LISTED[index - len(_MAJORS)]
            else:
                ticker, english, korean = _synthetic_ticker(np.random.default_rng([seed, index, 4]), taken)
            price = float(np.exp(rng.uniform(np.log(5), np.log(80_000))))
            beta = float(rng.uniform(0.5, 1.6))
            idio = float(rng.uniform(0.025, 0.07))
            # Turnover falls with the listing rank (the real tickers come roughly by size), with noise.
            rank = min(index - len(_MAJORS), 150) / 150
            turnover = float(np.clip(np.exp(np.log(4e10) - 4.0 * rank + 0.7 * rng.standard_normal()), 2e8, 1.5e11))
            liquidity = float(np.clip(2.5 * (turnover / 1e9) ** 0.5, 1.0, 12.0))
        specs.append(_Spec(MarketInfo(f"KRW-{ticker}", korean, english), price, beta, idio, turnover, liquidity))
    return specs


def _garch(shocks: np.ndarray, long_run_sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GARCH(1,1) returns and their conditional sd; rows are series, columns days (vectorised over rows)."""
    omega = long_run_sd**2 * (1 - _GARCH_ALPHA - _GARCH_BETA)
    variance = long_run_sd**2
    by_day = np.ascontiguousarray(shocks.T)  # one contiguous row per day: the loop runs over days
    returns = np.empty_like(by_day)
    sds = np.empty_like(by_day)
    for day, shock in enumerate(by_day):
        sd = np.sqrt(variance)
        sds[day] = sd
        returns[day] = sd * shock
        variance = omega + _GARCH_ALPHA * returns[day] ** 2 + _GARCH_BETA * variance
    return returns.T, sds.T


_AR_BLOCK = 240
_AR_POWERS = np.arange(1, _AR_BLOCK + 1)


def _ar1(noise: np.ndarray, phi: float, start: float) -> np.ndarray:
    """``x_t = phi * x_(t-1) + noise_t`` from ``x_0 = start``, vectorised.

    Closed form per block, ``x_t = phi^t (x_0 + sum_k phi^-k e_k)``; blocks of 240 keep phi^-k small
    enough for full float precision (a Python loop over minutes would dominate the day's cost).
    """
    up, down = phi**-_AR_POWERS, phi**_AR_POWERS
    out = np.empty_like(noise)
    carry = start
    for first in range(0, len(noise), _AR_BLOCK):
        shocks = noise[first : first + _AR_BLOCK]
        n = len(shocks)
        out[first : first + n] = down[:n] * (carry + np.cumsum(shocks * up[:n]))
        carry = out[first + n - 1]
    return out


def _bridge(increments: np.ndarray, target: float) -> np.ndarray:
    """Cumulative path of ``increments`` pinned to end exactly at ``target`` (a Brownian bridge)."""
    path = np.cumsum(increments)
    ramp = np.arange(1, len(path) + 1) / len(path)
    return path + ramp * (target - path[-1])


_MINUTE_OF_DAY_H = (np.arange(DAY_MINUTES) + 0.5) / 60.0


def _seasonal_profile() -> np.ndarray:
    """Intraday activity by UTC minute: peaks at 00-02 UTC (Korean morning) and 13-15 UTC (US open)."""
    def bump(centre: float, width: float) -> np.ndarray:
        distance = np.minimum(np.abs(_MINUTE_OF_DAY_H - centre), 24 - np.abs(_MINUTE_OF_DAY_H - centre))
        return np.exp(-((distance / width) ** 2))

    return 0.7 + 0.8 * bump(1.0, 2.5) + 0.5 * bump(14.0, 2.0)


_SEASON = _seasonal_profile()


class SimulatedMarket:
    """The simulated data source (the model: docs/replay.md, "Simulated market")."""

    def __init__(self, n_markets: int = 250, seed: int = 7):
        if n_markets < 1:
            raise ValueError("the simulated market needs at least one market")
        self.seed = seed
        self.specs = _universe(n_markets, seed)
        self._index = {spec.info.market: i for i, spec in enumerate(self.specs)}
        shocks = np.stack([np.random.default_rng([seed, i, 0]).standard_normal(_N_DAYS) for i in range(n_markets)])
        long_run = np.array([_BTC_DAILY_SD] + [spec.idio_vol for spec in self.specs[1:]])
        returns, self._day_sd = _garch(shocks, long_run)  # row 0: BTC; rows 1..: idiosyncratic parts
        betas = np.array([0.0] + [spec.beta for spec in self.specs[1:]])
        self._btc_return = returns[0].copy()
        self._idio_return = returns
        self._idio_return[0] = 0.0
        total = betas[:, None] * self._btc_return[None, :] + self._idio_return
        total[0] = self._btc_return
        cumulative = np.concatenate([np.zeros((n_markets, 1)), np.cumsum(total, axis=1)], axis=1)
        anchor_log = np.log([spec.price for spec in self.specs])
        # _log_level[m, d] is the log open of day d (= log close of day d - 1).
        self._log_level = anchor_log[:, None] + cumulative - cumulative[:, _ANCHOR_DAY : _ANCHOR_DAY + 1]
        self._betas = betas
        # ~90 KB per (market, day): 1024 days of minutes is about 90 MB, e.g. 250 markets x 4 days.
        self._day_minutes = functools.lru_cache(maxsize=1024)(self._generate_day)
        self._btc_day = functools.lru_cache(maxsize=512)(self._generate_btc_day)
        self._closed_aggregate = functools.lru_cache(maxsize=65_536)(self._aggregate_day)
        self._events = functools.lru_cache(maxsize=64)(self._week_events)

    # --- CandleSource ---
    def default_clock(self) -> float | None:
        return None

    def has_market(self, market: str) -> bool:
        return market in self._index

    def markets(self, now: float) -> list[MarketInfo]:
        week = int((now - _EPOCH_S) // (7 * DAY_SECONDS))
        return list(self._events(week))

    def candles(self, market: str, unit_minutes: int, end: float, count: int, now: float) -> Candles:
        m = self._index[market]
        end = min(end, now)
        last_day = min(math.ceil((end - _EPOCH_S) / DAY_SECONDS) - 1, _N_DAYS - 1)
        now_day = math.floor((now - _EPOCH_S) / DAY_SECONDS)
        blocks: list[Candles] = []
        have = 0
        for day in range(last_day, -1, -1):
            if day == now_day:
                block = aggregate(self._minutes_until(m, day, now), unit_minutes)
            elif unit_minutes == 1:
                block = self._day_minutes(m, day)
            else:
                block = self._closed_aggregate(m, day, unit_minutes)
            block = block.before(end)
            blocks.append(block)
            have += len(block)
            if have >= count:
                break
        merged = Candles.concat(blocks[::-1])
        return merged.take(slice(max(0, len(merged) - count), None))

    def extremes_52w(self, market: str, now: float) -> tuple[float, str, float, str]:
        """From daily closes of the simulated path (cheap; intraday extremes are not scanned)."""
        m = self._index[market]
        today = math.floor((now - _EPOCH_S) / DAY_SECONDS)
        first = max(0, today - 364)
        closes = np.exp(self._log_level[m, first + 1 : today + 1])
        if len(closes) == 0:
            closes = np.exp(self._log_level[m, today : today + 1])
        closes = round_to_tick(closes)
        hi, lo = int(np.argmax(closes)), int(np.argmin(closes))

        def day_str(offset: int) -> str:
            return datetime.fromtimestamp(_EPOCH_S + (first + offset) * DAY_SECONDS, tz=timezone.utc).strftime("%Y-%m-%d")

        return float(closes[hi]), day_str(hi), float(closes[lo]), day_str(lo)

    # --- generation ---
    def _week_events(self, week: int) -> tuple[MarketInfo, ...]:
        infos = []
        for i, spec in enumerate(self.specs):
            if i < len(_MAJORS):
                infos.append(spec.info)
                continue
            draws = np.random.default_rng([self.seed, i, week, 3]).random(6)
            warning = bool(draws[0] < 0.02) or i == 9
            caution = tuple(bool(u < p) for u, p in zip(draws[1:], (0.01, 0.015, 0.005, 0.04, 0.005)))
            if i == 13:
                caution = tuple(c or k == "GLOBAL_PRICE_DIFFERENCES" for c, k in zip(caution, CAUTION_KEYS))
            if i == 17:
                caution = tuple(c or k == "PRICE_FLUCTUATIONS" for c, k in zip(caution, CAUTION_KEYS))
            infos.append(MarketInfo(spec.info.market, spec.info.korean_name, spec.info.english_name, warning, caution))
        return tuple(infos)

    def _intraday_weights(self, rng: np.random.Generator) -> np.ndarray:
        """Share of the day's variance per minute: seasonality times an AR(1) log-volatility factor."""
        noise = rng.standard_normal(DAY_MINUTES) * _VOL_SD * math.sqrt(1 - _VOL_PHI**2)
        log_vol = _ar1(noise, _VOL_PHI, rng.standard_normal() * _VOL_SD)
        weights = _SEASON * np.exp(2 * log_vol)
        return weights / weights.sum()

    def _generate_btc_day(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        """BTC's intraday log path relative to the day open (pinned to the daily return) and its minute sd."""
        rng = np.random.default_rng([self.seed, 0, day, 2])
        weights = self._intraday_weights(rng)
        sd = self._day_sd[0, day] * np.sqrt(weights)
        return _bridge(rng.standard_normal(DAY_MINUTES) * sd, self._btc_return[day]), sd

    def _generate_day(self, m: int, day: int) -> Candles:
        """Every traded minute of one market and UTC day (the full day, regardless of the clock)."""
        spec = self.specs[m]
        btc_path, btc_sd = self._btc_day(day)
        rng = np.random.default_rng([self.seed, m, day, 2])
        if m == 0:
            path, sd = btc_path, btc_sd
            weights = (btc_sd / self._day_sd[0, day]) ** 2
            rng = np.random.default_rng([self.seed, 0, day, 5])
        else:
            weights = self._intraday_weights(rng)
            idio_sd = self._day_sd[m, day] * np.sqrt(weights)
            path = self._betas[m] * btc_path + _bridge(rng.standard_normal(DAY_MINUTES) * idio_sd, self._idio_return[m, day])
            sd = np.sqrt((self._betas[m] * btc_sd) ** 2 + idio_sd**2)
        z = rng.standard_normal((5, DAY_MINUTES))
        u = rng.random((2, DAY_MINUTES))
        day_open = self._log_level[m, day]
        # Trade prices scatter around the efficient path (bid/ask bounce), except the day's last,
        # which is the daily path's close, so the next day opens from it.
        log_close = day_open + path + _BOUNCE * sd * z[0] * (np.arange(DAY_MINUTES) < DAY_MINUTES - 1)
        close = np.exp(log_close)
        open_ = np.exp(np.r_[day_open, log_close[:-1]] + 0.2 * _BOUNCE * sd * z[4])
        high = np.maximum(open_, close) * np.exp(np.abs(z[1]) * _EXCURSION * sd)
        low = np.minimum(open_, close) * np.exp(-np.abs(z[2]) * _EXCURSION * sd)
        open_, close = round_to_tick(open_), round_to_tick(close)
        high = round_to_tick(np.maximum(high, np.maximum(open_, close)), "up")
        low = round_to_tick(np.minimum(low, np.minimum(open_, close)), "down")

        activity = np.sqrt(weights * DAY_MINUTES)
        trade_probability = 1 - np.exp(-spec.liquidity * activity)
        traded = u[0] < trade_probability
        vol_regime = self._day_sd[m, day] / (_BTC_DAILY_SD if m == 0 else spec.idio_vol)
        busy = activity**1.5 / np.mean(activity**1.5)  # turnover follows volatility, persistently
        krw = spec.turnover / DAY_MINUTES * busy * np.exp(0.4 * z[3] - 0.08) * vol_regime / trade_probability
        vwap = np.clip((open_ + high + low + close) / 4, low, high)
        volume = np.maximum(np.round(krw / vwap, 8), 1e-8)
        start = _EPOCH_S + day * DAY_SECONDS + np.arange(DAY_MINUTES, dtype=np.int64) * 60
        # Upbit's timestamp is the last trade: near the minute's end on liquid coins, anywhere on thin ones.
        last_offset_ms = 60_000 - (u[1] ** 3 * 59_000 * np.exp(-spec.liquidity * activity / 3)).astype(np.int64) - 1
        return Candles(
            start=start[traded],
            open=open_[traded],
            high=high[traded],
            low=low[traded],
            close=close[traded],
            volume=volume[traded],
            value=(volume * vwap)[traded],
            last_trade_ms=(start * 1000 + last_offset_ms)[traded],
        )

    def _aggregate_day(self, m: int, day: int, unit_minutes: int) -> Candles:
        """A closed day's candles at a coarser interval (small, so cached far longer than the minutes)."""
        return aggregate(self._day_minutes(m, day), unit_minutes)

    def _minutes_until(self, m: int, day: int, now: float) -> Candles:
        """The day's minutes as known at ``now``: closed ones whole, the one at the clock forming."""
        if not 0 <= day < _N_DAYS:
            return Candles.empty()
        minutes = self._day_minutes(m, day).before(now)
        if len(minutes) == 0 or minutes.start[-1] + 60 <= now:
            return minutes
        return with_forming_last(minutes, (now - minutes.start[-1]) / 60.0, now)


def with_forming_last(minutes: Candles, fraction: float, now: float) -> Candles:
    """Replace the last minute by its state after ``fraction`` of the minute: a forming candle."""
    i = len(minutes) - 1
    o, h, l, c = minutes.open[i], minutes.high[i], minutes.low[i], minutes.close[i]
    close = float(round_to_tick(np.array([o + (c - o) * fraction]))[0])
    top, bottom = max(o, close), min(o, close)
    high = float(round_to_tick(np.array([top + (h - max(o, c)) * fraction]), "up")[0])
    low = float(round_to_tick(np.array([max(bottom - (min(o, c) - l) * fraction, l)]), "down")[0])
    arrays = {name: getattr(minutes, name).copy() for name in ("start", "open", "high", "low", "close", "volume", "value", "last_trade_ms")}
    arrays["close"][i] = close
    arrays["high"][i] = min(max(high, top), h)
    arrays["low"][i] = max(min(low, bottom), l)
    arrays["volume"][i] = max(round(minutes.volume[i] * fraction, 8), 1e-8)
    arrays["value"][i] = minutes.value[i] * arrays["volume"][i] / minutes.volume[i]
    arrays["last_trade_ms"][i] = min(int(now * 1000), int(minutes.last_trade_ms[i]))
    return Candles(**arrays)
