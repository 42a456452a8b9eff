"""Ranked short-term buy recommendations and the record of how they turned out."""
