"""Field sets and managedFields: who owns which field of an object (server-side apply).

A field set is a set of paths. A path is a tuple of elements as upstream's FieldsV1 writes
them: `f:<name>` for a field or map key, `k:<json>` for an element of a list keyed by merge
keys (`k:{"name":"web"}`), `v:<json>` for an element of a set-like list. Atomic lists and
scalars are leaves. An element of a keyed list owns itself as well as its fields, which
FieldsV1 writes as `".": {}`.

Which lists are keyed comes from the upstream schema (`x-kubernetes-list-map-keys`, else
`x-kubernetes-patch-merge-key`) or, for custom resources, from their CRD schema; lists the
schema calls `set` hold `v:` elements; every other list is atomic.
"""

from __future__ import annotations

import json
from typing import Any

from k8py.api.schemas import Node

Path = tuple[str, ...]


def _list_keys(schema: Node | None) -> list[str] | None:
    if schema is None:
        return None
    raw = schema.schema
    keys = raw.get("x-kubernetes-list-map-keys")
    if keys:
        return list(keys)
    merge_key = raw.get("x-kubernetes-patch-merge-key")
    return [merge_key] if merge_key else None


def _is_set(schema: Node | None) -> bool:
    if schema is None:
        return False
    raw = schema.schema
    return raw.get("x-kubernetes-list-type") == "set" or (
        "merge" in schema.patch_strategies and not raw.get("x-kubernetes-patch-merge-key"))


def element_key(element: Any, keys: list[str]) -> str:
    if not isinstance(element, dict):
        return "v:" + json.dumps(element, separators=(",", ":"))
    return "k:" + json.dumps({k: element.get(k) for k in keys if k in element},
                             separators=(",", ":"))


def child(schema: Node | None, name: str) -> Node | None:
    return schema.field(name) if schema is not None else None


def field_set(value: Any, schema: Node | None, path: Path = ()) -> set[Path]:
    """Every leaf path of value (and every keyed-list element)."""
    paths: set[Path] = set()
    if isinstance(value, dict) and value:
        for name, item in value.items():
            paths |= field_set(item, child(schema, name), path + (f"f:{name}",))
        return paths
    if isinstance(value, list) and value:
        items = schema.items() if schema is not None else None
        keys = _list_keys(schema)
        if keys:
            for element in value:
                element_path = path + (element_key(element, keys),)
                paths.add(element_path)
                if isinstance(element, dict):
                    paths |= field_set(element, items, element_path)
            return paths
        if _is_set(schema):
            return {path + ("v:" + json.dumps(e, separators=(",", ":")),) for e in value}
    if path:
        paths.add(path)
    return paths


def lookup(obj: Any, path: Path, schema: Node | None) -> tuple[bool, Any]:
    """(found, value) at path."""
    value = obj
    for element in path:
        if element.startswith("f:"):
            if not isinstance(value, dict) or element[2:] not in value:
                return False, None
            schema = child(schema, element[2:])
            value = value[element[2:]]
        else:
            if not isinstance(value, list):
                return False, None
            found = _find(value, element, schema)
            if found is None:
                return False, None
            schema = schema.items() if schema is not None else None
            value = value[found]
    return True, value


def _find(items: list, element: str, schema: Node | None) -> int | None:
    keys = _list_keys(schema)
    for i, item in enumerate(items):
        if element.startswith("v:"):
            if "v:" + json.dumps(item, separators=(",", ":")) == element:
                return i
        elif keys and element_key(item, keys) == element:
            return i
    return None


def remove(obj: Any, path: Path, schema: Node | None) -> None:
    """Delete the field or element at path, in place, if it is there."""
    if not path:
        return
    found, parent = lookup(obj, path[:-1], schema)
    if not found:
        return
    parent_schema = schema
    for element in path[:-1]:
        parent_schema = child(parent_schema, element[2:]) if element.startswith("f:") else (
            parent_schema.items() if parent_schema is not None else None)
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif isinstance(parent, list):
        index = _find(parent, last, parent_schema)
        if index is not None:
            del parent[index]


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
        if path and path[-1].startswith("k:"):
            node.setdefault(".", {})
    return tree


def from_fields_v1(tree: dict[str, Any], path: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for element, sub in (tree or {}).items():
        if element == ".":
            paths.add(path)
            continue
        here = path + (element,)
        if sub:
            paths |= from_fields_v1(sub, here)
        else:
            paths.add(here)
    return paths


def changed_paths(old: Any, new: Any, schema: Node | None, path: Path = ()) -> set[Path]:
    """The paths of new whose values differ from old's (what an update takes ownership of),
    found in one walk of both objects."""
    if old == new:
        return set()
    if isinstance(new, dict) and new and isinstance(old, dict):
        paths: set[Path] = set()
        for name, item in new.items():
            paths |= changed_paths(old.get(name, _MISSING), item, child(schema, name),
                                   path + (f"f:{name}",))
        return paths
    if isinstance(new, list) and new and isinstance(old, list):
        keys = _list_keys(schema)
        if keys:
            items = schema.items() if schema is not None else None
            before = {element_key(e, keys): e for e in old}
            paths = set()
            for element in new:
                key = element_key(element, keys)
                previous = before.get(key, _MISSING)
                if previous is _MISSING:
                    paths |= field_set(element, items, path + (key,)) | {path + (key,)}
                else:
                    paths |= changed_paths(previous, element, items, path + (key,))
            return paths
        if _is_set(schema):
            return {p for p in field_set(new, schema, path)
                    if p[-1] not in {"v:" + json.dumps(e, separators=(",", ":")) for e in old}}
    return field_set(new, schema, path) if path else set()


_MISSING = object()


def tree_discard(tree: dict[str, Any], path: Path) -> bool:
    """Remove path from a FieldsV1 tree in place, pruning emptied parents; True if found."""
    if not path:
        return False
    head, rest = path[0], path[1:]
    sub = tree.get(head)
    if sub is None:
        return False
    if not rest:
        del tree[head]
        return True
    found = tree_discard(sub, rest)
    if found and not sub:
        del tree[head]
    return found


def tree_add(tree: dict[str, Any], path: Path) -> None:
    node = tree
    for element in path:
        node = node.setdefault(element, {})
    if path and path[-1].startswith("k:"):
        node.setdefault(".", {})
