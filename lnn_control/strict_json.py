"""Strict JSON for every file the package writes: no ``NaN`` / ``Infinity`` tokens.

Python's ``json`` writes ``NaN`` by default, which is not JSON (RFC 8259): jq, JavaScript's
``JSON.parse`` and most dashboards reject the whole file. Here a missing or non-finite number
becomes ``null``, numpy scalars and arrays become plain numbers and lists, and the text is
written with ``allow_nan=False`` so a value that slipped through fails loudly at write time.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Mapping
from typing import Any

__all__ = ["clean", "dumps", "loads", "write"]


def clean(obj: Any, keep_nonfinite: bool = False) -> Any:
    """``obj`` with non-finite floats as ``None`` (kept with ``keep_nonfinite``), numpy values as
    Python ones, tuples as lists."""
    if isinstance(obj, float):
        return obj if keep_nonfinite or math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Mapping):
        return {str(k): clean(v, keep_nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v, keep_nonfinite) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return clean(obj.tolist(), keep_nonfinite)
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    raise TypeError(f"{obj!r} of type {type(obj).__name__} is not JSON-serialisable")


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``obj`` (``json.dumps`` keywords pass through, ``allow_nan`` is False)."""
    kwargs["allow_nan"] = False
    return json.dumps(clean(obj), **kwargs)


def _reject(token: str) -> Any:
    raise ValueError(f"{token} is not JSON (RFC 8259); the writer should have written null")


def loads(text: str) -> Any:
    """Parse strict JSON: ``NaN`` / ``Infinity`` tokens raise ``ValueError`` as in strict parsers."""
    return json.loads(text, parse_constant=_reject)


def write(path: str | pathlib.Path, obj: Any, indent: int | None = 1) -> pathlib.Path:
    """Write ``obj`` as strict JSON (and a trailing newline) to ``path``; returns the path."""
    p = pathlib.Path(path)
    p.write_text(dumps(obj, indent=indent) + "\n")
    return p
