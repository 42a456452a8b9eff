"""Asset checks that run inside a materialisation, on the frame in hand (never reloading partitions).

Every blocking check runs before the asset's ``Output``: ``checked`` reports all the results and then
stops the step if any failed, so a failed check never reaches storage (the IO manager is never
called) and Dagster records the failed evaluations for the UI.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

_MAX_FAILURES_SHOWN = 20


class BlockingCheckFailed(dg.Failure):
    """A blocking check failed: nothing was written, the stored rows are as they were, nothing downstream runs."""


def checked(*results: dg.AssetCheckResult, metadata: dict[str, Any] | None = None) -> Iterator[dg.AssetCheckResult]:
    """Report every blocking check's result; if any failed, stop the step before its output is stored.

    ``metadata`` (e.g. the fetch statistics) goes on the failure, since no materialisation will carry it.
    Not retried: the same data would fail the same check.
    """
    yield from results
    require_passed(*results, metadata=metadata)


def require_passed(*results: dg.AssetCheckResult, metadata: dict[str, Any] | None = None) -> None:
    """The gate itself, for writers outside a run too (``dantaro stream``): raise ``BlockingCheckFailed``
    naming every failed check, so nothing is written."""
    failed = [result for result in results if not result.passed]
    if failed:
        names = ", ".join(result.check_name for result in failed)
        reasons = "; ".join(f"{result.check_name}: {result.description}" for result in failed)
        raise BlockingCheckFailed(
            f"{names} check failed, nothing written (stored rows unchanged): {reasons}", metadata=metadata, allow_retries=False
        )


def schema_check_spec(asset: str, *, blocking: bool = True, name: str = "schema") -> dg.AssetCheckSpec:
    """The spec of a pandera check; blocking by default so bad rows never flow downstream."""
    return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description="pandera schema: types, ranges, keys, window")


def pandera_check(schema: pa.DataFrameSchema, frame: pd.DataFrame, *, name: str = "schema") -> dg.AssetCheckResult:
    """Validate ``frame`` lazily and report every failure case (capped) in the check's metadata."""
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        shown = cases.head(_MAX_FAILURES_SHOWN)[["column", "check", "failure_case", "index"]].astype(str)
        return dg.AssetCheckResult(
            check_name=name,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{len(cases)} failure(s): " + "; ".join(sorted(set(cases["check"].astype(str)))[:5]),
            metadata={"failures": len(cases), "failure_cases": dg.MetadataValue.md(shown.to_markdown(index=False))},
        )
    return dg.AssetCheckResult(check_name=name, passed=True, metadata={"rows": len(frame)})
