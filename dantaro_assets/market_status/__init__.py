"""Market status: is the whole KRW market risk-on or risk-off, every MARKET_STATUS_INTERVAL seconds."""
