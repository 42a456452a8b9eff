"""The support levels domain's wiring: the analysis declared in assets.py, with its publish step, job and schedule at SUPPORT_LEVELS_INTERVAL."""

from dantaro_assets.support_levels.assets import SUPPORT_LEVELS

build_defs = SUPPORT_LEVELS.definitions
