"""What every pandera schema shares: no float column may hold an infinity.

pandera's range checks let ``inf`` through ``gt(0)`` / ``ge(0)``, and a column without checks takes
anything, so one ``Infinity`` from Upbit (Python's json reads it) or from a division by zero would be
stored and served. NaN is the columns' business: a non-nullable column refuses it, a nullable one
means "no data" by it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa


def _is_finite(values: pd.Series) -> pd.Series:
    return np.isfinite(values)


FINITE = pa.Check(_is_finite, name="finite", error="must be finite (no inf or -inf)")


def finite_floats(schema: pa.DataFrameSchema) -> pa.DataFrameSchema:
    """``schema`` with the finite check added to every float column."""
    floats = {
        name: {"checks": [*column.checks, FINITE]}
        for name, column in schema.columns.items()
        if column.dtype is not None and pd.api.types.is_float_dtype(column.dtype.type)
    }
    return schema.update_columns(floats)
