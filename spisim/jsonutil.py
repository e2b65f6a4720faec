"""Values made ready for JSON: the one ``json_safe`` of the toolkit (reports, metrics, label-game results)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and ±inf replaced by None (JSON has neither) and numpy scalars and arrays by Python values,
    recursively through mappings (keys become strings, as JSON's are), lists and tuples (which become lists)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj
