"""Asset checks that run inside a materialisation, on the frame in hand (never reloading partitions)."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

_MAX_FAILURES_SHOWN = 20


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
