"""Support and resistance levels per KRW market, every SUPPORT_LEVELS_INTERVAL seconds."""

from dantaro_assets.lib.publishing import redis_publish_asset
from dantaro_assets.support_levels.assets import support_levels

support_levels_redis = redis_publish_asset(support_levels, per_market=True)
assets = [support_levels, support_levels_redis]

__all__ = ["assets", "support_levels", "support_levels_redis"]
