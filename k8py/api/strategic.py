"""Strategic merge patch, as upstream's `strategicpatch.StrategicMergePatch` applies it.

It is a JSON merge patch (maps merge, `null` deletes a key) where the schema decides how
lists merge:
- a list whose field has patch strategy `merge` and a merge key (containers by `name`, ports
  by `containerPort`) merges element by element: a patch element updates the element with the
  same key, or is appended; `{"<key>": k, "$patch": "delete"}` removes one;
- a primitive list with strategy `merge` (finalizers) takes the union;
- every other list is replaced whole, as in a merge patch.

Directives, all removed from the result:
- `$patch: replace` in a map replaces the map; in a list (as an element) replaces the list;
  `$patch: delete` in a map deletes it;
- `$retainKeys: [...]` keeps only those keys of the map (fields with strategy `retainKeys`);
- `$setElementOrder/<field>: [...]` orders the merged list (`kubectl apply` sends it);
- `$deleteFromPrimitiveList/<field>: [...]` removes values from a primitive list.

A directive of the wrong shape (`$retainKeys: 5`) raises `PatchFormatError`, upstream's 400.
Fields the schema does not describe merge like a JSON merge patch. The functions are pure.
"""

from __future__ import annotations

from typing import Any

from k8py.api.jsondoc import clone
from k8py.api.patching import PatchError, PatchFormatError
from k8py.api.schemas import Node

PATCH = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ORDER = "$setElementOrder/"
DELETE_PRIMITIVES = "$deleteFromPrimitiveList/"


def _is_directive(key: str) -> bool:
    return key in (PATCH, RETAIN_KEYS) or key.startswith((SET_ORDER, DELETE_PRIMITIVES))


def strategic_merge_patch(original: dict[str, Any], patch: Any, schema: Node | None) -> Any:
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    return _merge_map(clone(original), patch, schema)


def _merge_map(original: Any, patch: dict[str, Any], schema: Node | None) -> Any:
    directive = patch.get(PATCH)
    if directive == "replace":
        return _strip({k: v for k, v in patch.items() if k != PATCH})
    if directive == "delete":
        return None
    if directive is not None:
        raise PatchError(f"unknown patch directive {directive!r}")
    result = original if isinstance(original, dict) else {}
    orders, deletions = {}, {}
    for key, value in patch.items():
        if key.startswith(SET_ORDER):
            if not isinstance(value, list):
                raise PatchFormatError("invalid patch format of setElementOrder list")
            orders[key[len(SET_ORDER):]] = value
        elif key.startswith(DELETE_PRIMITIVES):
            if not isinstance(value, list):
                raise PatchFormatError("invalid patch format of primitive list")
            deletions[key[len(DELETE_PRIMITIVES):]] = value
    keep = patch.get(RETAIN_KEYS, [])
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        raise PatchFormatError("invalid patch format of retainKeys")
    for key, value in patch.items():
        if _is_directive(key):
            continue
        field = schema.field(key) if schema is not None else None
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _merge_map(result.get(key), value, field)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, field)
        else:
            result[key] = value
    for key, values in deletions.items():
        if isinstance(result.get(key), list):
            result[key] = [v for v in result[key] if v not in values]
    for key, order in orders.items():
        if isinstance(result.get(key), list):
            field = schema.field(key) if schema is not None else None
            result[key] = _order(result[key], order, field.merge_key if field else None)
    if RETAIN_KEYS in patch:
        result = {k: v for k, v in result.items() if k in set(keep)}
    return result


def _merge_list(original: Any, patch: list[Any], field: Node | None) -> list[Any]:
    if any(isinstance(e, dict) and e.get(PATCH) == "replace" for e in patch):
        return _strip([e for e in patch if not (isinstance(e, dict) and PATCH in e)])
    strategies = field.patch_strategies if field is not None else set()
    if "merge" not in strategies or not isinstance(original, list):
        return _strip([e for e in patch if not (isinstance(e, dict) and e.get(PATCH))])
    merge_key = field.merge_key
    if merge_key is None:  # a primitive list: union, in order
        result = list(original)
        for element in patch:
            if element not in result:
                result.append(element)
        return result
    items = field.items()
    result = list(original)
    for element in patch:
        if not isinstance(element, dict) or merge_key not in element:
            raise PatchError(f"a list element must carry its merge key {merge_key!r}")
        index = next((i for i, e in enumerate(result)
                      if isinstance(e, dict) and e.get(merge_key) == element[merge_key]), None)
        if element.get(PATCH) == "delete":
            if index is not None:
                del result[index]
            continue
        if index is None:
            result.append(_strip({k: v for k, v in element.items() if k != PATCH}))
        else:
            result[index] = _merge_map(result[index], element, items)
    return result


def _order(values: list[Any], order: list[Any], merge_key: str | None) -> list[Any]:
    """Put the elements named in order first, in that order; the rest keep theirs after."""
    def identity(element):
        key = element.get(merge_key) if merge_key and isinstance(element, dict) else element
        return key if isinstance(key, (str, int, float, bool)) else None  # None: unranked

    rank = {key: i for i, key in enumerate(map(identity, order)) if key is not None}
    placed = sorted((e for e in values if identity(e) in rank), key=lambda e: rank[identity(e)])
    rest = [e for e in values if identity(e) not in rank]
    return placed + rest


def _strip(value: Any) -> Any:
    """Remove directives from a value that is being set, not merged."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not _is_directive(k)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value
