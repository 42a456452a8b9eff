"""Housekeeping: retention of the tables and of Dagster's own run history (job and schedule: definitions.py)."""

from dantaro_assets.maintenance.cleanup import (
    enforce_retention,
    purge_runs,
    purge_tables,
)

__all__ = ["enforce_retention", "purge_runs", "purge_tables"]
