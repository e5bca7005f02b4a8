"""Printing benchmark results: a table for people, one JSON object for machines."""

from __future__ import annotations

import json
from typing import Any


def print_result(title: str, result: dict[str, Any], *, as_json: bool) -> None:
    """Print ``result`` as JSON (one object) or as an aligned two-column table."""
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    print(title)
    width = max((len(k) for k in result), default=0)
    for key, value in result.items():
        if isinstance(value, float):
            shown = f"{value:,.3f}"
        elif value is None:
            shown = "n/a"  # e.g. a p99 that misses made unbounded, a cost with no call up
        else:
            shown = str(value)
        print(f"  {key:<{width}}  {shown}")
