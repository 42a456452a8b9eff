"""The market status domain's wiring: the analysis declared in assets.py, with its publish step, job and schedule at MARKET_STATUS_INTERVAL."""

from dantaro_assets.market_status.assets import MARKET_STATUS

build_defs = MARKET_STATUS.definitions
