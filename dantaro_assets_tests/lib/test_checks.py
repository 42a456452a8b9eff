"""The blocking check step: every result is reported, then a failure stops the step before its output."""

import dagster as dg
import pytest

from dantaro_assets.lib.checks import BlockingCheckFailed, checked


def test_checked_reports_every_result_then_stops_the_step_when_any_failed():
    passed = dg.AssetCheckResult(check_name="schema", passed=True)
    assert list(checked(passed)) == [passed]
    failed = dg.AssetCheckResult(check_name="coverage", passed=False, description="only 0/4 markets answered")
    steps = checked(passed, failed, metadata={"requests": 4})
    assert [next(steps), next(steps)] == [passed, failed], "the passed check is reported too, before the stop"
    with pytest.raises(BlockingCheckFailed, match=r"^coverage check failed, nothing written \(stored rows unchanged\): coverage: ") as stop:
        next(steps)
    assert stop.value.allow_retries is False and stop.value.metadata["requests"].value == 4
