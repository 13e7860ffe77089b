"""Values made ready for strict JSON (no NaN) before ``json.dumps``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def json_ready(value: Any, other: Callable[[Any], Any] | None = None) -> Any:
    """``value`` with NaN floats as None, tuples as lists and dict keys as strings, recursively.

    Args:
        value: nested dicts / lists / tuples of plain values.
        other: applied to values that are none of str, int, float, bool, None, dict, list, tuple
            (e.g. ``str`` for paths); None keeps them as they are.
    """
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): json_ready(v, other) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v, other) for v in value]
    if other is None or isinstance(value, (str, int, bool)) or value is None:
        return value
    return other(value)
