"""An example value for a JSON Schema (a pydantic model's), for the docs' example frames.

The schema's own ``examples``, ``default``, ``const`` or first ``enum`` value wins; otherwise a
plain value of its type, bounded in depth. It shows the shape, it does not promise to pass
every constraint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 6

_STRINGS = {"date-time": "2026-01-01T12:00:00Z", "date": "2026-01-01", "time": "12:00:00",
            "email": "ann@example.com", "uuid": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "uri": "https://example.com/", "duration": "PT1M"}


def example_of(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> Any:
    """An example for ``schema``; ``$ref`` are read from ``defs`` (``#/.../<name>``)."""
    if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
        return None
    if "$ref" in schema:
        return example_of(defs.get(str(schema["$ref"]).rsplit("/", 1)[-1]), defs, depth + 1)
    for key in ("examples", "enum"):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema[key][0]
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key, ()) if o.get("type") != "null"]
        if options:
            return example_of(options[0], defs, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return _typed(kind, schema, defs, depth)


def _typed(kind: Any, schema: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> Any:
    if kind == "string":
        text = _STRINGS.get(str(schema.get("format")), "text")
        return text.ljust(int(schema.get("minLength", 0)), "x")
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = low + 1 if "exclusiveMinimum" in schema else low
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "array":
        item = example_of(schema.get("items", {}), defs, depth + 1)
        return [] if item is None else [item] * max(1, int(schema.get("minItems", 1)))
    if kind == "object" or "properties" in schema:
        return {name: example_of(sub, defs, depth + 1)
                for name, sub in schema.get("properties", {}).items()}
    return None
