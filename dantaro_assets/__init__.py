"""Dantaro: Upbit KRW market status, support levels and recommendations as Dagster assets."""

import warnings

# Single-run backfills and lookbacks reaching before the first partition use parameters Dagster marks
# beta; we depend on them knowingly, so their warnings would only bury real ones in every log.
# Matched by message so that importing this package (e.g. for the replay server) does not import dagster.
warnings.filterwarnings("ignore", message=r".* is currently in beta, and may have breaking changes")
