"""Dantaro: Upbit KRW market status, support levels and recommendations as Dagster assets."""

import warnings

# Ranged backfills (``backfill_policy``) and lookbacks reaching before the first partition
# (``allow_nonexistent_upstream_partitions``) are the two beta parameters we depend on knowingly; any
# other beta or preview API still warns. Matched by message so that importing this package (e.g. for
# the replay server) does not import dagster.
warnings.filterwarnings("ignore", message=r"Parameter `(allow_nonexistent_upstream_partitions|backfill_policy)` of .* is currently in beta")
