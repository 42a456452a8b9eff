"""The Dagster instance config: the project's dagster.yaml with the settings' run limit filled in.

``concurrency.runs.max_concurrent_runs`` is a plain int in Dagster's schema (no ``{env: ...}``), so the
file written into DAGSTER_HOME is rendered from the template with ``WORKER_MAX_WORKERS`` rather than
copied; ``limits.instance_limit_problems`` tells whether a running instance agrees with the settings.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from dantaro_assets.settings import Settings, get_settings

PROJECT_DIR = Path(__file__).resolve().parents[2]
TEMPLATE = PROJECT_DIR / "dagster.yaml"


def render_instance_config(settings: Settings | None = None, template: Path = TEMPLATE) -> dict:
    """The template's config with the run limit taken from the settings."""
    settings = settings or get_settings()
    config = yaml.safe_load(template.read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = settings.worker_max_workers
    return config


def write_instance_config(dagster_home: Path, settings: Settings | None = None, template: Path = TEMPLATE) -> Path:
    """Write ``dagster.yaml`` into ``dagster_home`` (created if missing); returns its path."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    header = f"# written by dantaro_assets.operations.instance from {template}; edit the template, not this file\n"
    target.write_text(header + yaml.safe_dump(render_instance_config(settings, template), sort_keys=False))
    return target
