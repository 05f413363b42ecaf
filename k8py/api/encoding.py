"""JSON as kube-apiserver writes it, so clients that compare bodies byte for byte (error
strings built from a raw `Status`, golden files) see the same bytes.

Upstream encodes with Go's `json.Encoder`:
- compact (no spaces after `,` and `:`), UTF-8 as is, one "\\n" after each document;
- `<`, `>` and `&` escaped as `\\u003c`, `\\u003e`, `\\u0026`, and U+2028/U+2029 as `\\u2028`,
  `\\u2029` (Go's HTML-safe default); these can only occur inside strings, so replacing them
  in the encoded text is exact;
- fields in the struct's order: `TypeMeta` (kind, apiVersion) first, then `metadata` in
  ObjectMeta's order, then the kind's own fields; a `Status` as
  kind, apiVersion, metadata, status, message, reason, details, code.
Objects here are plain dicts whose other fields keep the order they were written in: the
top level and metadata are put in Go's order, deeper fields are not (their Go order is not in
the published schemas).
"""

from __future__ import annotations

import json
from typing import Any

OBJECT_META = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
               "generation", "creationTimestamp", "deletionTimestamp",
               "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
               "finalizers", "managedFields")
LIST_META = ("selfLink", "resourceVersion", "continue", "remainingItemCount")
STATUS = ("kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code")
_HEAD = ("kind", "apiVersion", "metadata")
_TAIL = ("status",)  # a kind's status comes after its spec and other fields
_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
               ("\u2029", "\\u2029"))


# one encoder for every call: json.dumps with these options builds a new one each time
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _in_order(mapping: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    out = {key: mapping[key] for key in order if key in mapping}
    if len(out) < len(mapping):
        out.update((k, v) for k, v in mapping.items() if k not in out)
    return out


def ordered(obj: Any) -> Any:
    """obj with its top level (and metadata, and a list's items) in Go's field order; a new
    dict where anything moves, never a modified one."""
    if not isinstance(obj, dict):
        return obj
    if obj.get("kind") == "Status":
        return _in_order(obj, STATUS)
    head = {key: obj[key] for key in _HEAD if key in obj}
    metadata = head.get("metadata")
    if isinstance(metadata, dict):
        is_list = isinstance(obj.get("items"), list)
        head["metadata"] = _in_order(metadata, LIST_META if is_list else OBJECT_META)
    body = {k: v for k, v in obj.items() if k not in head and k not in _TAIL}
    if isinstance(body.get("items"), list):
        body["items"] = [ordered(item) for item in body["items"]]
    head.update(body)
    head.update((k, obj[k]) for k in _TAIL if k in obj)
    return head


def text(obj: Any) -> str:
    """The compact JSON text of obj as Go writes it (without the trailing newline); obj's
    keys are taken in the order they have. Raises ValueError for NaN or Infinity."""
    out = _ENCODER.encode(obj)
    for raw, escaped in _GO_ESCAPES:
        if raw in out:
            out = out.replace(raw, escaped)
    return out


def compact(obj: Any) -> bytes:
    """obj in Go's field order, as Go writes it: the bytes of a stored object or an event."""
    return text(ordered(obj)).encode()


def dumps(obj: Any) -> bytes:
    """An API response body: `compact`, with the final newline."""
    return compact(obj) + b"\n"
