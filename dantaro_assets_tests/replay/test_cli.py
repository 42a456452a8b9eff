"""The command line: clear errors for bad options, one ready line with the URL."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/nonexistent"], "no recorded candles"),
        (["--simulated", "0"], "at least one market"),
        (["--clock", "garbage"], "--clock: invalid time"),
        (["--fault", '{"kind": "x"}'], "unknown fault kind"),
        (["--rate-limit", "-1"], "must not be negative"),
    ],
)
def test_bad_options_fail_with_a_clear_message(args, message):
    done = subprocess.run([sys.executable, "-m", "dantaro_replay", "--port", "0", *args], check=False,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr


def test_ready_line_names_url_source_and_clock(replay_server_factory):
    server = replay_server_factory("--simulated", "3", "--seed", "11", "--clock", "2025-09-02T03:04:05+09:00")
    assert server.url.startswith("http://127.0.0.1:")
    assert server.clock().isoformat() == "2025-09-01T18:04:05+00:00"
    assert server.stats()["source"] == "simulated 3 markets, seed 11"
