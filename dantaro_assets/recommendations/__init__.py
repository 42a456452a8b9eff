"""Ranked short-term buy recommendations and the record of how they turned out."""

from dantaro_assets.lib.publishing import redis_publish_asset
from dantaro_assets.recommendations.assets import (
    recommendation_outcomes,
    recommendations,
)

recommendations_redis = redis_publish_asset(recommendations)  # the served scorer's picks (SnapshotStore.served_rows)
assets = [recommendations, recommendations_redis, recommendation_outcomes]

__all__ = ["assets", "recommendation_outcomes", "recommendations", "recommendations_redis"]
