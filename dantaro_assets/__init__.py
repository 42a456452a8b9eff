"""Dantaro: Upbit KRW market status, support levels and recommendations as Dagster assets."""

import warnings

import dagster as dg

# Single-run backfills and lookbacks reaching before the first partition use parameters Dagster marks
# beta; we depend on them knowingly, so their warnings would only bury real ones in every log.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
