"""Market status: is the whole KRW market risk-on or risk-off, every MARKET_STATUS_INTERVAL seconds."""

from dantaro_assets.lib.publishing import redis_publish_asset
from dantaro_assets.market_status.assets import market_status

market_status_redis = redis_publish_asset(market_status)
assets = [market_status, market_status_redis]

__all__ = ["assets", "market_status", "market_status_redis"]
