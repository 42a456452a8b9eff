"""Throttled log lines: the first of a kind as it comes, then one summary with the count per period."""

from __future__ import annotations

import logging

from dantaro_assets.lib.log_throttle import ThrottledLog


def test_a_burst_is_one_line_then_one_summary_per_period_and_kinds_are_counted_apart(caplog):
    now = [0.0]
    say = ThrottledLog(logging.getLogger("dantaro.test"), 60, prefix="stream: ", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="dantaro.test"):
        for i in range(3465):  # the junk frames of 15 s
            now[0] = i * 15 / 3465
            say.log("junk", logging.WARNING, "stream: a message that is not JSON: %r", f"frame {i}")
        say.log("outage", logging.WARNING, "stream: cannot record its health")
        say.flush()  # nothing is due yet
        assert [r.getMessage() for r in caplog.records] == ["stream: a message that is not JSON: 'frame 0'", "stream: cannot record its health"]
        now[0] = 61.0
        say.flush()
        say.log("junk", logging.WARNING, "stream: a message that is not JSON: %r", "frame after")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[2] == "stream: 3464 more like this in the last 61 s (last: stream: a message that is not JSON: 'frame 3464')"
    assert lines[3:] == ["stream: a message that is not JSON: 'frame after'"]  # the outage line had no repeat: no summary
    assert caplog.records[2].levelno == logging.WARNING


def test_everything_pending_is_summarised_at_shutdown(caplog):
    say = ThrottledLog(logging.getLogger("dantaro.test"), 60, clock=lambda: 5.0)
    with caplog.at_level(logging.INFO, logger="dantaro.test"):
        for _ in range(4):
            say.log("write", logging.ERROR, "writing failed")
        say.flush(everything=True)
    assert [r.getMessage() for r in caplog.records] == ["writing failed", "3 more like this in the last 0 s (last: writing failed)"]
