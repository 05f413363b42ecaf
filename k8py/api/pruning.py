"""Unknown fields and mistyped values: find them against the upstream schema.

Upstream decodes built-in objects into typed structs, so a field the schema does not know is
never stored, and a value of the wrong JSON type fails the decoding. `fieldValidation` only
decides whether the client hears about unknown fields (Strict: the request fails; Warn, the
default: a `Warning` header per field; Ignore: silence); a mistyped value always fails. This
module does the schema walk: it returns the object without unknown fields and their paths,
written as upstream writes them (`spec.template.spec.containers[0].foo`), and raises
`TypeMismatch` worded as Go's decoder words it (`json: cannot unmarshal number into Go struct
field ConfigMap.data of type string`).

Only subtrees whose schema lists `properties` are pruned; free-form maps
(`additionalProperties`) are walked into, and anything marked
`x-kubernetes-preserve-unknown-fields` or without a schema is kept as is. `null` is accepted
wherever a value is (Go leaves the field at its zero value). Values the schema gives no type
(IntOrString and Quantity give a choice of two) accept those types; a Quantity must also
parse as one.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

from k8py.api import quantity
from k8py.api.schemas import Node

# Fields every object may carry that schemas of some kinds do not list.
_ALWAYS_ALLOWED = {"apiVersion", "kind", "metadata"}

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1  # Go's int64: JSON numbers the API takes
_INT_RANGES = {"int32": (-(2 ** 31), 2 ** 31 - 1), "int64": (INT64_MIN, INT64_MAX)}
_SUBSCRIPT = re.compile(r"\[[^\]]*\]")


class TypeMismatch(Exception):
    """A value Go's JSON decoder would refuse for this field; the message is Go's."""


def _mismatch(got: str, struct: str, path: str, go_type: str) -> TypeMismatch:
    # Go names the innermost struct and the field's whole path, without map keys or indexes
    return TypeMismatch(f"json: cannot unmarshal {got} into Go struct field "
                        f"{struct}.{_SUBSCRIPT.sub('', path)} of type {go_type}")


def prune(obj: Any, schema: Node | None, path: str = "") -> tuple[Any, list[str]]:
    """(obj without unknown fields, unknown field paths). obj is not modified. Raises
    TypeMismatch for a value of the wrong type."""
    unknown: list[str] = []
    struct = _go_name(schema, qualified=False) if schema is not None else ""
    return _walk(obj, schema, path, unknown, struct, top=True), unknown


def _walk(value: Any, schema: Node | None, path: str, unknown: list[str], struct: str,
          top: bool = False):
    if schema is None:
        return value
    raw = schema.schema
    if not top and value is not None:
        _check_type(value, schema, path, struct)
    if raw.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        properties = raw.get("properties")
        if properties:
            inner = _go_name(schema, qualified=False) or struct
            result = {}
            for key, item in value.items():
                child = schema.field(key) if key in properties else None
                if child is None:
                    if top and key in _ALWAYS_ALLOWED:
                        result[key] = item
                        continue
                    unknown.append(f"{path}.{key}" if path else key)
                    continue
                result[key] = _walk(item, child, f"{path}.{key}" if path else key, unknown,
                                    inner)
            return result
        extra = raw.get("additionalProperties")
        if isinstance(extra, dict):
            child = schema.field("")  # a free-form map: every key shares this schema
            if child is not None and child.definition == _QUANTITY:
                # Go decodes null in a ResourceList as the zero Quantity, written "0"
                return {k: "0" if v is None else
                        _walk(v, child, f"{path}[{k}]" if path else k, unknown, struct)
                        for k, v in value.items()}
            return {k: _walk(v, child, f"{path}[{k}]" if path else k, unknown, struct)
                    for k, v in value.items()}
        return value
    if isinstance(value, list):
        items = schema.items()
        if items is None:
            return value
        return [_walk(v, items, f"{path}[{i}]", unknown, struct) for i, v in enumerate(value)]
    return value


def _json_type(value: Any) -> str:
    kind = value.__class__
    if kind is bool:
        return "bool"
    if kind is int or kind is float:
        return "number"
    if kind is str:
        return "string"
    if kind is list:
        return "array"
    return "object"


def _check_type(value: Any, schema: Node, path: str, struct: str) -> None:
    allowed = schema.python_types
    if not allowed:
        return
    kind = value.__class__
    if kind in allowed:
        if kind is int and "number" not in schema.json_types \
                and not _int_fits(value, schema.schema.get("format")):
            raise _mismatch(f"number {value}", struct, path, _go_type(schema))
        if kind is str and schema.schema.get("format") == "byte" and not _is_base64(value):
            raise TypeMismatch(f"illegal base64 data at input byte {_base64_error_at(value)}")
        if schema.definition == _QUANTITY and not _is_quantity(value):
            raise TypeMismatch(_QUANTITY_SYNTAX)
        return
    got = _json_type(value)
    if got == "number" and "integer" in schema.json_types:
        got = f"number {value}"
    raise _mismatch(got, struct, path, _go_type(schema))


_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_QUANTITY_SYNTAX = ("quantities must match the regular expression "
                    "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")


def _is_quantity(value: Any) -> bool:
    try:
        return math.isfinite(quantity.parse(value) * 1000)
    except ValueError:
        return False


def _int_fits(value: int, fmt: str | None) -> bool:
    low, high = _INT_RANGES.get(fmt or "int64", _INT_RANGES["int64"])
    return low <= value <= high


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _base64_error_at(text: str) -> int:
    """Where Go's decoder gives up on text that is not padded standard base64."""
    text = text.replace("\r", "").replace("\n", "")
    for i, char in enumerate(text):
        if not (char.isascii() and (char.isalnum() or char in "+/=")):
            return i
    return len(text) - len(text) % 4


def _go_name(schema: Node, qualified: bool = True) -> str:
    """`v1.ObjectMeta` (or `ObjectMeta`) for a schema that is a named definition, else ""."""
    name = schema.definition
    if not name:
        return ""
    return ".".join(name.rsplit(".", 2)[-2:]) if qualified else name.rsplit(".", 1)[-1]


def _go_type(schema: Node) -> str:
    """The Go type a schema node stands for, as Go's decoder names it in errors."""
    name = _go_name(schema)
    if name:
        return name
    raw = schema.schema
    kinds = schema.json_types
    kind = kinds[0] if len(kinds) == 1 else ""
    if kind == "integer":
        return raw.get("format") or "int64"
    if kind == "array":
        items = schema.items()
        return "[]" + (_go_type(items) if items is not None else "interface {}")
    if kind == "object":
        extra = schema.field("") if isinstance(raw.get("additionalProperties"), dict) else None
        return "map[string]" + (_go_type(extra) if extra is not None else "interface {}")
    return {"string": "string", "number": "float64", "boolean": "bool"}.get(kind,
                                                                            "interface {}")
