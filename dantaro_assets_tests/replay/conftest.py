from __future__ import annotations

from datetime import datetime, timezone

import pytest

from dantaro_replay.simulated import SimulatedMarket

# A fixed replay clock in the middle of a minute, so the newest candle is forming.
CLOCK = datetime(2025, 9, 3, 12, 34, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="session")
def simulated() -> SimulatedMarket:
    """The same market as the ``replay_server`` fixture (40 markets, seed 7), in-process."""
    return SimulatedMarket(40, 7)


@pytest.fixture(scope="session")
def thin_market(simulated: SimulatedMarket) -> str:
    """The least liquid simulated market: many no-trade minutes."""
    return min(simulated.specs, key=lambda spec: spec.liquidity).info.market
