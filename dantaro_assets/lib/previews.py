"""The newest snapshot of an analysis asset as the Dagster UI shows it in the materialisation's metadata."""

from __future__ import annotations

import dagster as dg
import pandas as pd


def latest_table(frame: pd.DataFrame, columns: list[str], rows: int = 20, digits: int = 4) -> dg.MetadataValue:
    """The newest as_of's rows as a Markdown table (first ``rows`` rows, numbers rounded)."""
    if frame.empty:
        return dg.MetadataValue.md("_no snapshot: the hour has no tick yet_")
    latest = frame[frame["as_of"] == frame["as_of"].max()]
    shown = latest[columns].head(rows).round(digits)
    title = f"as_of {latest['as_of'].iloc[0].strftime('%Y-%m-%d %H:%M')} UTC, {len(latest)} row(s)"
    return dg.MetadataValue.md(f"**{title}**\n\n" + shown.to_markdown(index=False))
