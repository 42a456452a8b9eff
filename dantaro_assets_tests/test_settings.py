import subprocess
import sys
from pathlib import Path

import pytest

from dantaro_assets.settings import SettingsError, load_settings


def test_defaults_are_the_seed_workers():
    settings = load_settings({})
    assert (settings.market_status_interval, settings.recommendations_interval, settings.support_levels_interval) == (120, 300, 900)
    assert (settings.worker_max_workers, settings.upbit_api_timeout, settings.max_symbols_per_batch) == (3, 30.0, 50)
    assert settings.cache_ttls == {"market_status": 300, "recommendations": 300, "support_levels": 1800}
    assert settings.database_url is None and settings.redis_url is None
    assert settings.min_reward_risk == 1.5


def test_values_are_parsed_from_the_environment():
    settings = load_settings(
        {"WORKER_ENABLED": "false", "MARKET_STATUS_INTERVAL": "300", "DATABASE_URL": "postgresql://u@h:5/db",
         "UPBIT_BASE_URL": "http://127.0.0.1:8765/", "WORKER_LOG_LEVEL": "debug", "UNRELATED": "x"}
    )
    assert settings.worker_enabled is False
    assert settings.market_status_interval == 300
    assert settings.upbit_base_url == "http://127.0.0.1:8765"
    assert settings.worker_log_level == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MARKET_STATUS_INTERVAL", "90", "must divide an hour into whole minutes"),
        ("SUPPORT_LEVELS_INTERVAL", "2400", "one of [60, 120"),
        ("DATABASE_URL", "mysql://x/y", "postgresql://"),
        ("REDIS_URL", "localhost:6379", "redis://"),
        ("UPBIT_BASE_URL", "ftp://x", "http://"),
        ("UPBIT_BASE_URL", "https://", "http://"),  # no host
        ("UPBIT_BASE_URL", "http://127.0.0.1:87x65", "port that is not a number"),
        ("REDIS_URL", "redis://127.0.0.1:port/0", "port that is not a number"),
        ("UPBIT_API_TIMEOUT", "-1", "greater than 0"),
        ("MAX_SYMBOLS_PER_BATCH", "0", "greater than or equal to 1"),
        ("WORKER_ENABLED", "maybe", "must be one of"),
        ("WORKER_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        ("DANTARO_MIN_REWARD_RISK", "0.8", "greater than or equal to 1"),
        ("DANTARO_CALIBRATION", "/nowhere/calibration.json", "no such file: /nowhere/calibration.json"),
        # a bound alone lets infinity through (inf >= 1), and says "greater than 0" of nan, which is not the problem
        ("DANTARO_MIN_REWARD_RISK", "inf", "finite number"),
        ("UPBIT_API_TIMEOUT", "nan", "finite number"),
        ("DANTARO_MIN_TURNOVER_KRW", "Infinity", "finite number"),
        ("DANTARO_STREAM_GRACE_SECONDS", "-inf", "finite number"),
        ("DANTARO_API_CORS_ORIGINS", "https://ok.example, http://x/path", "no path"),
        ("DANTARO_API_CORS_ORIGINS", "example.com", "like https://example.com:8443"),
    ],
)
def test_bad_values_fail_naming_the_variable_and_the_accepted_values(variable, value, expected):
    with pytest.raises(SettingsError) as excinfo:
        load_settings({variable: value})
    message = str(excinfo.value)
    assert f"{variable}={value!r}" in message
    assert expected in message


def test_the_api_token_is_never_shown_not_even_when_it_is_refused():
    token = "0123456789abcdef0123"
    settings = load_settings({"DANTARO_API_TOKEN": token, "DANTARO_API_CORS_ORIGINS": "https://a.example:8443/, http://localhost:3000"})
    assert settings.api_token.get_secret_value() == token and settings.api_cors_origins == ("https://a.example:8443", "http://localhost:3000")
    assert token not in repr(settings) and token not in str(settings.display_values())
    assert settings.display_values()["DANTARO_API_CORS_ORIGINS"] == "https://a.example:8443,http://localhost:3000"
    assert load_settings({}).api_token is None and load_settings({}).api_cors_origins == ()
    for weak in ("short-token", "a token with spaces in it", "tökenwithumlaut123456"):
        with pytest.raises(SettingsError, match=r"DANTARO_API_TOKEN \(value not shown: it holds secrets\): must be 16 to 512 characters") as excinfo:
            load_settings({"DANTARO_API_TOKEN": weak})
        assert weak not in str(excinfo.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('[{"url": "http://x/h", "events": ["run_failed"],', "is not JSON (Expecting property name enclosed in double quotes at line 1 column 49)"),
        ('{"url": "http://x/h"}', "must be a JSON list of {url, events, format, secret} objects"),
        ('[{"url": "ftp://x/h", "events": ["run_failed"]}]', "receiver 1, url: must be an http:// or https:// URL with a host"),
        ('[{"url": "https://x/h", "events": []}]', "receiver 1, events: must name at least one event of regime_change, new_top_pick"),
        ('[{"url": "https://x/h", "events": ["run_failed"], "format": "teams"}]', "receiver 1, format: Input should be 'json', 'slack' or 'discord'"),
        ('[{"url": "https://x/h", "events": ["run_failed"], "secret": ""}]', "receiver 1, secret: must not be empty"),
        ('[{"url": "https://x/h", "events": ["run_failed"], "secrte": "k"}]', "receiver 1, secrte: Extra inputs are not permitted"),
    ],
)
def test_a_bad_webhooks_value_fails_naming_the_receiver_and_the_field(value, expected):
    with pytest.raises(SettingsError) as excinfo:
        load_settings({"DANTARO_WEBHOOKS": value})
    assert f"DANTARO_WEBHOOKS (value not shown: it holds secrets): {expected}" in str(excinfo.value)


def test_webhooks_are_parsed_with_json_as_the_default_format():
    [target] = load_settings({"DANTARO_WEBHOOKS": '[{"url": "https://x/h", "events": ["stream_down", "stream_up"], "secret": "k"}]'}).webhooks
    assert (target.format, target.events, target.secret.get_secret_value()) == ("json", ("stream_down", "stream_up"), "k")
    assert load_settings({}).webhooks == ()


def test_every_bad_variable_is_reported_at_once():
    with pytest.raises(SettingsError) as excinfo:
        load_settings({"MARKET_STATUS_INTERVAL": "7", "UPBIT_API_TIMEOUT": "0"})
    assert "MARKET_STATUS_INTERVAL" in str(excinfo.value) and "UPBIT_API_TIMEOUT" in str(excinfo.value)


def test_cli_refuses_to_start_with_bad_settings():
    result = subprocess.run(
        [sys.executable, "-m", "dantaro_assets.cli", "settings"], check=False,
        env={"PATH": "/usr/bin:/bin", "RECOMMENDATIONS_INTERVAL": "301"},
        capture_output=True, text=True, cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 2
    assert "RECOMMENDATIONS_INTERVAL='301'" in result.stderr


def test_the_state_folder_is_one_absolute_path_from_the_project_folder_whatever_the_current_one(monkeypatch, tmp_path):
    from dantaro_assets.settings import PROJECT_DIR

    monkeypatch.chdir(tmp_path)  # a relative value never depends on where a process starts
    assert load_settings({}).state_dir == PROJECT_DIR / ".dantaro"
    assert load_settings({"DANTARO_STATE_DIR": "state/x"}).state_dir == PROJECT_DIR / "state" / "x"
    assert load_settings({"DANTARO_STATE_DIR": str(tmp_path / "s")}).state_dir == tmp_path / "s"


def test_dagster_home_is_the_state_folders_unless_set():
    derived = load_settings({"DANTARO_STATE_DIR": "/srv/dantaro"})
    assert derived.dagster_home is None and derived.instance_home == Path("/srv/dantaro/dagster_home")
    assert derived.display_values()["DAGSTER_HOME"] == "/srv/dantaro/dagster_home"
    overridden = load_settings({"DANTARO_STATE_DIR": "/srv/dantaro", "DAGSTER_HOME": "/var/lib/dagster"})
    assert overridden.instance_home == Path("/var/lib/dagster")
