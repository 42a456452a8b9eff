"""Which Postgres and Redis a process uses: decided once, from the settings, for runs and every other process alike."""

from pathlib import Path

import dagster as dg
import pytest

from dantaro_assets.resources import build_resources, process_storage
from dantaro_assets.settings import load_settings


def test_configured_urls_win_over_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for variable, url in (("DATABASE_URL", "postgresql://u@db:5432/x"), ("REDIS_URL", "redis://cache:6379/1")):
        monkeypatch.setenv(variable, url)
    monkeypatch.setenv("DANTARO_STATE_DIR", str(tmp_path))
    settings = load_settings()
    assert process_storage(settings).urls() == ("postgresql://u@db:5432/x", "redis://cache:6379/1")
    assert not any(tmp_path.iterdir()), "nothing is started when URLs are configured"
    # runs get the same resources, the URL as the variable's name (never its value) in the definitions
    resources = build_resources(settings)
    assert resources["postgres"].url == dg.EnvVar("DATABASE_URL") and resources["redis"].url == dg.EnvVar("REDIS_URL")
