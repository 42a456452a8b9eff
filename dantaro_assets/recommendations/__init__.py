"""Ranked short-term buy recommendations and the record of how they turned out."""

from dantaro_assets.recommendations.assets import (
    recommendation_outcomes,
    recommendations,
)

assets = [recommendations, recommendation_outcomes]

__all__ = ["assets", "recommendation_outcomes", "recommendations"]
