"""Support and resistance levels per KRW market, every SUPPORT_LEVELS_INTERVAL seconds."""

from dantaro_assets.support_levels.assets import support_levels

assets = [support_levels]

__all__ = ["assets", "support_levels"]
