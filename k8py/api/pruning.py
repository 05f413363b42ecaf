"""Unknown fields: find them against the upstream schema, and drop them.

Upstream decodes built-in objects into typed structs, so a field the schema does not know is
never stored; `fieldValidation` only decides whether the client hears about it (Strict: the
request fails; Warn, the default: a `Warning` header per field; Ignore: silence). This module
does the schema walk: it returns the object without unknown fields and their paths, written as
upstream writes them (`spec.template.spec.containers[0].foo`).

Only subtrees whose schema lists `properties` are pruned; free-form maps
(`additionalProperties`) are walked into, and anything marked
`x-kubernetes-preserve-unknown-fields` or without a schema is kept as is.
"""

from __future__ import annotations

from typing import Any

from k8py.api.schemas import Node

# Fields every object may carry that schemas of some kinds do not list.
_ALWAYS_ALLOWED = {"apiVersion", "kind", "metadata"}


def prune(obj: Any, schema: Node | None, path: str = "") -> tuple[Any, list[str]]:
    """(obj without unknown fields, unknown field paths). obj is not modified."""
    unknown: list[str] = []
    return _walk(obj, schema, path, unknown, top=True), unknown


def _walk(value: Any, schema: Node | None, path: str, unknown: list[str], top: bool = False):
    if schema is None:
        return value
    raw = schema.schema
    if raw.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        properties = raw.get("properties")
        if properties:
            result = {}
            for key, item in value.items():
                child = schema.field(key) if key in properties else None
                if child is None:
                    if top and key in _ALWAYS_ALLOWED:
                        result[key] = item
                        continue
                    unknown.append(f"{path}.{key}" if path else key)
                    continue
                result[key] = _walk(item, child, f"{path}.{key}" if path else key, unknown)
            return result
        extra = raw.get("additionalProperties")
        if isinstance(extra, dict):
            child = Node(extra)
            return {k: _walk(v, child, f"{path}[{k}]" if path else k, unknown)
                    for k, v in value.items()}
        return value
    if isinstance(value, list):
        items = schema.items()
        if items is None:
            return value
        return [_walk(v, items, f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return value
