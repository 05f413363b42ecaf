"""JSON patch (RFC 6902) and JSON merge patch (RFC 7386), on plain dicts.

Both are pure: they return a new document and never modify their inputs. A patch that cannot
apply raises `PatchError` with a message the API server returns as a 422 (upstream answers
a failed `test` or a missing path the same way); a malformed patch raises `PatchFormatError`
(400) and one that would do too much work `PatchTooLarge` (413): at most 10,000 JSON patch
operations, and at most 3 MiB copied by `copy` operations.

Strategic merge patch and server-side apply need the upstream schemas' merge keys and live
elsewhere once built.
"""

from __future__ import annotations

import json
from typing import Any

from k8py.api.jsondoc import clone


class PatchError(ValueError):
    """The patch does not apply to this object: a 422."""


class PatchFormatError(PatchError):
    """The patch itself is malformed (a directive of the wrong shape): a 400, as upstream."""


class PatchTooLarge(PatchError):
    """The patch asks for more work than a request may cause: a 413, as upstream."""


MAX_JSON_PATCH_OPERATIONS = 10_000  # upstream's limit
MAX_COPIED_BYTES = 3 * 1024 * 1024  # what `copy` operations may add up to, like upstream


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    return _merge_in_place(clone(target), patch)


def _merge_in_place(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_in_place(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, *, for_add: bool = False) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    if i > len(container) or (not for_add and i == len(container)):
        raise PatchError(f"array index {i} out of range")
    return i


def _parent(doc: Any, tokens: list[str]) -> Any:
    for token in tokens[:-1]:
        if isinstance(doc, dict):
            if token not in doc:
                raise PatchError(f"path segment {token!r} not found")
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token)]
        else:
            raise PatchError(f"cannot descend into a scalar at {token!r}")
    return doc


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {'/' + '/'.join(tokens)!r} not found")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last)]
    raise PatchError("cannot index a scalar")


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {'/' + '/'.join(tokens)!r} not found")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last))
    raise PatchError("cannot remove from a scalar")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError("cannot add to a scalar")
    return doc


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902: apply operations in order; all or nothing."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise PatchTooLarge(f"The allowed operations in a JSON patch is limited to "
                            f"{MAX_JSON_PATCH_OPERATIONS}, got {len(operations)}")
    copied = 0  # a few `copy`s of `copy`s would otherwise double the document each time
    doc = clone(document)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind, tokens = op["op"], _pointer(str(op["path"]))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {kind} needs a value")
        if kind == "add":
            doc = _add(doc, tokens, clone(op["value"]))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            _get(doc, tokens)
            if not tokens:
                doc = clone(op["value"])
            else:
                _remove(doc, tokens)
                doc = _add(doc, tokens, clone(op["value"]))
        elif kind in ("move", "copy"):
            source = _pointer(str(op.get("from", "")))
            value = _get(doc, source) if kind == "copy" else _remove(doc, source)
            if kind == "copy":
                copied += len(json.dumps(value, separators=(",", ":")))
                if copied > MAX_COPIED_BYTES:
                    raise PatchTooLarge(f"Unable to copy: accumulated copy size limit "
                                        f"{MAX_COPIED_BYTES} exceeded")
            doc = _add(doc, tokens, clone(value))
        elif kind == "test":
            if _get(doc, tokens) != op["value"]:
                raise PatchError(f"test operation failed at {op['path']!r}")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc
