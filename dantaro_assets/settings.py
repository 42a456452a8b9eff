"""Dantaro's settings: one typed object read once from the environment.

The worker's variable names (``WORKER_*``, ``*_INTERVAL``, ``DATABASE_URL``, ``REDIS_URL``,
``UPBIT_API_TIMEOUT``, ``MAX_SYMBOLS_PER_BATCH``) are a contract: operators have them in their unit
files. The project's own knobs are prefixed ``DANTARO_`` or ``UPBIT_``.
A bad value fails at load time with the variable's name and what it accepts, never later in a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from dantaro_assets.redaction import redact_url, redact_webhook_url

PROJECT_DIR = Path(__file__).resolve().parent.parent  # the source checkout, when the package runs from one


def base_dir() -> Path:
    """Where the default and relative state folders start: the project folder of a source checkout
    (it holds ``setup.py``), else, for a plain ``pip install .``, the current folder."""
    return PROJECT_DIR if (PROJECT_DIR / "setup.py").is_file() else Path.cwd()


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_URL_VARIABLES = ("DATABASE_URL", "REDIS_URL", "UPBIT_BASE_URL")
_SECRET_VARIABLES = ("DANTARO_WEBHOOKS", "DANTARO_API_TOKEN")  # never echoed: their values hold secrets even when malformed
_TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")  # RFC 6750's b64token, long enough not to be guessed
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|\*")
TRADER_EVENTS = ("regime_change", "new_top_pick", "picks_expired")
OPERATOR_EVENTS = ("run_failed", "freshness_failed", "check_failed", "stream_down", "stream_up")
WEBHOOK_EVENTS = TRADER_EVENTS + OPERATOR_EVENTS


class SettingsError(ValueError):
    """A setting in the environment is invalid; the message names the variable."""


def _check_url(value: str | None, variable: str, schemes: tuple[str, ...]) -> str | None:
    if value in (None, ""):
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.hostname or parts.path or parts.query):
        raise ValueError(f"{variable} must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError(f"{variable} has a port that is not a number from 0 to 65535") from None
    return value


class WebhookTarget(BaseModel):
    """One receiver of ``DANTARO_WEBHOOKS``: where to POST, which events, in which format, signed with which secret.

    The secret is a ``SecretStr`` and the URL is shown through ``redact_webhook_url`` (chat webhooks keep their
    token in the path), so neither reaches a repr, a log or ``dantaro settings``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    events: tuple[str, ...]
    format: Literal["json", "slack", "discord"] = "json"
    secret: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [event for event in value if event not in WEBHOOK_EVENTS]
        if not value:
            raise ValueError(f"must name at least one event of {', '.join(WEBHOOK_EVENTS)}")
        if unknown:
            raise ValueError(f"unknown event(s) {', '.join(map(repr, unknown))}: the events are {', '.join(WEBHOOK_EVENTS)}")
        return value

    @field_validator("secret")
    @classmethod
    def _non_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty (leave it out for an unsigned receiver)")
        return value

    @property
    def fingerprint(self) -> str:
        """Names this receiver in stored deliveries without storing its URL (whose path may be a chat token)."""
        return hashlib.sha256(f"{self.format}|{self.url}".encode()).hexdigest()[:16]

    def shown(self) -> dict[str, object]:
        """The receiver as ``dantaro settings`` prints it: URL redacted, secret as ``***``."""
        return {"url": redact_webhook_url(self.url), "events": list(self.events), "format": self.format,
                **({"secret": "***"} if self.secret is not None else {})}

    def __repr_args__(self):
        yield from self.shown().items()


def parse_webhooks(value: object) -> object:
    """``DANTARO_WEBHOOKS`` as a JSON text becomes a list (pydantic then validates each receiver)."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         "expected a list of {url, events, format, secret} objects") from None
    if not isinstance(parsed, list):
        raise ValueError("must be a JSON list of {url, events, format, secret} objects")
    return parsed


class Settings(BaseModel):
    """Every knob of the pipeline; field aliases are the environment variable names."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore",
                              allow_inf_nan=False)  # a bound alone lets inf through (inf >= 1) and misreports nan

    # --- the worker contract's names ---
    worker_enabled: bool = Field(True, alias="WORKER_ENABLED", description="false leaves every schedule stopped")
    worker_log_level: str = Field("INFO", alias="WORKER_LOG_LEVEL", description="log level of runs and services")
    worker_max_workers: int = Field(3, alias="WORKER_MAX_WORKERS", ge=1, le=64, description="runs in flight at once")
    market_status_interval: int = Field(120, alias="MARKET_STATUS_INTERVAL", description="seconds between market status snapshots")
    recommendations_interval: int = Field(300, alias="RECOMMENDATIONS_INTERVAL", description="seconds between recommendation snapshots")
    support_levels_interval: int = Field(900, alias="SUPPORT_LEVELS_INTERVAL", description="seconds between support level snapshots")
    database_url: str | None = Field(None, alias="DATABASE_URL", description="Postgres URL; unset starts an embedded Postgres")
    redis_url: str | None = Field(None, alias="REDIS_URL", description="Redis URL; unset starts an embedded Redis")
    upbit_api_timeout: float = Field(30.0, alias="UPBIT_API_TIMEOUT", gt=0, le=300, description="seconds per Upbit request")
    max_symbols_per_batch: int = Field(50, alias="MAX_SYMBOLS_PER_BATCH", ge=1, le=200, description="markets per orderbook/instruments request")
    market_status_cache_ttl: int = Field(300, alias="MARKET_STATUS_CACHE_TTL", ge=1, description="TTL of the market status snapshot in Redis (s)")
    recommendations_cache_ttl: int = Field(300, alias="RECOMMENDATIONS_CACHE_TTL", ge=1, description="TTL of the recommendations snapshot in Redis (s)")
    support_levels_cache_ttl: int = Field(1800, alias="SUPPORT_LEVELS_CACHE_TTL", ge=1, description="TTL of the support level snapshots in Redis (s)")

    # --- added by the Dagster project ---
    upbit_base_url: str = Field("https://api.upbit.com", alias="UPBIT_BASE_URL", description="Upbit quotation API, or the replay server")
    upbit_requests_per_second: int = Field(10, alias="UPBIT_REQUESTS_PER_SECOND", ge=1, le=10, description="per-group request budget shared by all processes")
    upbit_max_retries: int = Field(3, alias="UPBIT_MAX_RETRIES", ge=0, le=10, description="attempts after the first on 429, 5xx and timeouts")
    state_dir: Path = Field(default_factory=lambda: base_dir() / ".dantaro", alias="DANTARO_STATE_DIR",
        description="local state: embedded Postgres/Redis, Dagster home; a relative path is taken from the project folder "
        "(the current folder when installed without a source checkout)")
    dagster_home: Path | None = Field(None, alias="DAGSTER_HOME",
        description="Dagster instance folder; unset = DANTARO_STATE_DIR/dagster_home with the project's dagster.yaml")
    db_schema: str = Field("dantaro", alias="DANTARO_SCHEMA", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Postgres schema of the tables")
    redis_prefix: str = Field("dantaro", alias="DANTARO_REDIS_PREFIX", pattern=r"^[A-Za-z0-9_.-]+$", description="prefix of every Redis key")
    run_timeout: int = Field(300, alias="DANTARO_RUN_TIMEOUT", ge=10, description="seconds before a run is stopped")
    run_retries: int = Field(3, alias="DANTARO_RUN_RETRIES", ge=0, le=10, description="retries of steps that call Upbit")
    run_memory_mb: int = Field(2048, alias="DANTARO_RUN_MEMORY_MB", ge=128,
        description="data-segment limit (RLIMIT_DATA) of each run process (MB); systemd MemoryMax caps each service")
    min_turnover_krw: float = Field(1e9, alias="DANTARO_MIN_TURNOVER_KRW", ge=0, description="24 h KRW turnover a market needs to be recommended")
    max_spread_bps: float = Field(50.0, alias="DANTARO_MAX_SPREAD_BPS", gt=0,
        description="widest order book spread (bps of the mid price) a recommended market may have; picks entered at the best ask")
    scorer: str = Field("reversal", alias="DANTARO_SCORER", pattern=r"^[a-z0-9_]+$",
        description="the scorer whose picks are served, the others run in shadow: a name of recommendations.scorers.SCORERS (checked at load)")
    min_reward_risk: float = Field(1.5, alias="DANTARO_MIN_REWARD_RISK", ge=1, description="least (target - entry) / (entry - stop) a pick must offer")
    calibration: str | None = Field(None, alias="DANTARO_CALIBRATION",
        description="the plans' calibration table (JSON, e.g. from `dantaro calibration refit`); unset = the one shipped, fitted on "
        "the recorded candles (bench/calibrate.py)")
    min_coverage: float = Field(0.9, alias="DANTARO_MIN_COVERAGE", gt=0, le=1, description="share of the universe a candle partition must cover")
    retention_candles_1m_days: int = Field(30, alias="DANTARO_RETENTION_CANDLES_1M_DAYS", ge=1, description="days of 1-minute candles kept")
    retention_candles_days: int = Field(730, alias="DANTARO_RETENTION_CANDLES_DAYS", ge=1, description="days of 1-hour and 1-day candles kept")
    retention_analyses_days: int = Field(180, alias="DANTARO_RETENTION_ANALYSES_DAYS", ge=1, description="days of analysis snapshots kept")
    retention_runs_days: int = Field(30, alias="DANTARO_RETENTION_RUNS_DAYS", ge=1, description="days of Dagster run and event history kept")
    stream_grace_seconds: float = Field(5.0, alias="DANTARO_STREAM_GRACE_SECONDS", ge=0, le=60,
        description="`dantaro stream`: seconds after a minute's end before it is written without a next-minute message")
    stream_stall_seconds: float = Field(30.0, alias="DANTARO_STREAM_STALL_SECONDS", ge=1, le=600,
        description="`dantaro stream`: reconnect after this long without a message")
    stream_report_seconds: float = Field(60.0, alias="DANTARO_STREAM_REPORT_SECONDS", ge=1, le=3600,
        description="`dantaro stream`: seconds between metric reports, Dagster materialisations and universe re-reads")
    stream_codes_per_connection: int = Field(250, alias="DANTARO_STREAM_CODES_PER_CONNECTION", ge=1, le=1000,
        description="`dantaro stream`: markets per WebSocket connection")
    stream_max_lag_seconds: float = Field(30.0, alias="DANTARO_STREAM_MAX_LAG_SECONDS", ge=1, le=3600,
        description="analyses read the stream's candles while its heartbeat and lag are within this; past it they fetch what it missed over REST")
    api_token: SecretStr | None = Field(None, alias="DANTARO_API_TOKEN",
        description="`dantaro api`: the bearer token every endpoint but /health requires (16 to 512 characters); unset, the "
        "endpoints are open (the API binds 127.0.0.1 by default); shown as `**********`")
    api_cors_origins: tuple[str, ...] = Field((), alias="DANTARO_API_CORS_ORIGINS",
        description="`dantaro api`: comma-separated origins (`https://host[:port]`, or `*`) whose web pages may call the API; "
        "unset, none")

    @field_validator("api_token", mode="before")
    @classmethod
    def _token(cls, value: object) -> object:
        if isinstance(value, str) and not _TOKEN_CHARACTERS.fullmatch(value):
            raise ValueError("must be 16 to 512 characters of A-Z a-z 0-9 . _ ~ + / = - (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("api_cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())
            for origin in value:
                if not _ORIGIN.fullmatch(origin):
                    raise ValueError(f"must be origins like https://example.com:8443 (scheme, host, port; no path) or *, got {origin!r}")
        return value

    webhooks: tuple[WebhookTarget, ...] = Field((), alias="DANTARO_WEBHOOKS",
        description="JSON list of webhook receivers `{url, events, format, secret}`, format json, slack or discord (docs: Webhooks); shown redacted")

    @field_validator("webhooks", mode="before")
    @classmethod
    def _webhooks(cls, value: object) -> object:
        return parse_webhooks(value)

    @field_validator("worker_enabled", mode="before")
    @classmethod
    def _bool(cls, value: object) -> object:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise ValueError(f"must be one of {sorted(_TRUE | _FALSE)}, got {value!r}")
        return value

    @field_validator("worker_log_level", mode="before")
    @classmethod
    def _log_level(cls, value: object) -> object:
        if isinstance(value, str) and value.upper() in _LOG_LEVELS:
            return value.upper()
        raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}, got {value!r}")

    @field_validator("state_dir", "dagster_home")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Every process, whatever folder it starts in, resolves the same absolute path."""
        return None if value is None else (base_dir() / value.expanduser()).resolve()

    @field_validator("calibration")
    @classmethod
    def _calibration_file(cls, value: str | None) -> str | None:
        """An absolute path to a file that exists (its contents are checked when the definitions load)."""
        if not value:
            return None
        path = (base_dir() / Path(value).expanduser()).resolve()
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        return str(path)

    @field_validator("market_status_interval", "recommendations_interval", "support_levels_interval")
    @classmethod
    def _divides_hour(cls, value: int) -> int:
        if value < 60 or value % 60 or 3600 % value:
            allowed = [m * 60 for m in range(1, 61) if 60 % m == 0]
            raise ValueError(f"must divide an hour into whole minutes: one of {allowed} seconds, got {value}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        return _check_url(value, "DATABASE_URL", ("postgresql", "postgres"))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _check_url(value, "REDIS_URL", ("redis", "rediss", "unix"))

    @field_validator("upbit_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        checked = _check_url(value, "UPBIT_BASE_URL", ("http", "https"))
        if checked is None:
            raise ValueError("must be an http(s) URL")
        return checked.rstrip("/")

    def __repr_args__(self):
        """A logged or printed Settings shows its URLs redacted."""
        for name, value in super().__repr_args__():
            is_url = name in Settings.model_fields and Settings.model_fields[name].alias in _URL_VARIABLES
            yield name, redact_url(value) if is_url and isinstance(value, str) else value

    def display_values(self) -> dict[str, str]:
        """Each variable's effective value as text, URLs redacted: what ``dantaro settings`` prints."""
        values = {
            field.alias: redact_url(value) if field.alias in _URL_VARIABLES and value is not None else str(value)
            for name, field in Settings.model_fields.items()
            for value in [getattr(self, name)]
        }
        webhooks = json.dumps([target.shown() for target in self.webhooks])
        return {**values, "DAGSTER_HOME": str(self.instance_home), "DANTARO_WEBHOOKS": webhooks,
                "DANTARO_API_CORS_ORIGINS": ",".join(self.api_cors_origins)}

    @property
    def instance_home(self) -> Path:
        """The Dagster instance folder every ``dantaro`` command uses: ``DAGSTER_HOME`` if set, else the state folder's."""
        return self.dagster_home or self.state_dir / "dagster_home"

    @property
    def cache_ttls(self) -> dict[str, int]:
        """Redis TTL of each analysis asset's snapshot."""
        return {
            "market_status": self.market_status_cache_ttl,
            "recommendations": self.recommendations_cache_ttl,
            "support_levels": self.support_levels_cache_ttl,
        }


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings; raise SettingsError naming each bad variable."""
    environ = os.environ if environ is None else environ
    names = {field.alias for field in Settings.model_fields.values()}
    present = {k: v for k, v in environ.items() if k in names and v != ""}
    try:
        return Settings.model_validate(present)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            variable = str(error["loc"][0]) if error["loc"] else "?"
            value = present.get(variable, "")
            message = error["msg"].removeprefix("Value error, ")
            if variable in _SECRET_VARIABLES:
                where = ", ".join(f"receiver {part + 1}" if isinstance(part, int) else str(part) for part in error["loc"][1:])
                lines.append(f"{variable} (value not shown: it holds secrets): {where + ': ' if where else ''}{message}")
                continue
            shown = redact_url(value) if variable in _URL_VARIABLES else value
            lines.append(f"{variable}={shown!r}: {message}")
        raise SettingsError("invalid Dantaro settings:\n  " + "\n  ".join(lines)) from None
