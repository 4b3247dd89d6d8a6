"""Array values as JSON, the one way every sink and tool writes them (NaN and infinities are not JSON)."""

from __future__ import annotations

import json
import math

from gateway.model import Value

_isfinite = math.isfinite
_compact = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False).encode


def finite(v: Value) -> Value:
    """``v`` with NaN and infinities as None, at any depth of an array or matrix."""
    if type(v) is float:
        return v if _isfinite(v) else None
    if type(v) is list:
        return [finite(x) for x in v]
    return v


def array_json(v: list[Value]) -> str:
    """Compact JSON text of an array or matrix: ``[1,2.5,[true,null]]``."""
    try:
        return _compact(v)
    except ValueError:  # NaN or inf inside: rare, so only then walk the elements
        return _compact(finite(v))
