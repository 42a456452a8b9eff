"""Support and resistance levels per KRW market, every SUPPORT_LEVELS_INTERVAL seconds."""
