"""Market status: is the whole KRW market risk-on or risk-off, every MARKET_STATUS_INTERVAL seconds."""

from dantaro_assets.market_status.assets import market_status

assets = [market_status]

__all__ = ["assets", "market_status"]
