"""OpenAPI v2 as protobuf: the `openapi_v2.Document` message of gnostic, which client-go asks
for (`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`) and parses with no
JSON fallback.

kubectl reads it to validate on the client what the server cannot validate for it, above all
the items of a `kind: List` (`kubectl apply -f` of a List). It builds a model of every
definition and fails on the whole document if one is malformed, and it validates only the
kinds a definition's `x-kubernetes-group-version-kind` names.

This module encodes the same Swagger 2.0 JSON document `openapi` builds, field by field, with
the field numbers of gnostic's `openapiv2/OpenAPIv2.proto`. Values with no message of their
own (`default`, `enum`, `example`, and every `x-` vendor extension) travel as gnostic's `Any`
holding YAML, as upstream's kube-openapi writes them. JSON-schema keys Swagger 2.0 has no
field for (`oneOf`, `anyOf`, `nullable`, ...) are left out, as upstream's conversion does.
Encoding only: nothing in k8py reads these documents.
"""

from __future__ import annotations

import struct
from typing import Any

import yaml

# What clients ask for (client-go: the first); what is answered, as upstream (Go's mime
# parser refuses the "@" of the first as a Content-Type).
MEDIA_TYPES = ("application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
               "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
CONTENT_TYPE = MEDIA_TYPES[1]


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _message(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string(number: int, value: str) -> bytes:
    return _message(number, value.encode()) if value else b""


def _bool(number: int, value: bool) -> bytes:
    return _varint(number << 3) + b"\x01" if value else b""


def _int64(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(int(value))


def _double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", float(value))


def _any(value: Any) -> bytes:
    """gnostic's Any: the value as YAML (field 2)."""
    return _string(2, yaml.safe_dump(value, default_flow_style=False, sort_keys=False))


def _extensions(number: int, node: dict[str, Any]) -> bytes:
    """The `x-` keys of node, each a NamedAny {name = 1, value = 2}."""
    return b"".join(_message(number, _string(1, key) + _message(2, _any(value)))
                    for key, value in node.items() if key.startswith("x-"))


def _named(number: int, name: str, value: bytes) -> bytes:
    return _message(number, _string(1, name) + _message(2, value))


# Schema: scalar fields by JSON key -> (field number, encoder)
_SCHEMA_SCALARS = {
    "$ref": (1, _string), "format": (2, _string), "title": (3, _string),
    "description": (4, _string), "multipleOf": (6, _double), "maximum": (7, _double),
    "exclusiveMaximum": (8, _bool), "minimum": (9, _double), "exclusiveMinimum": (10, _bool),
    "maxLength": (11, _int64), "minLength": (12, _int64), "pattern": (13, _string),
    "maxItems": (14, _int64), "minItems": (15, _int64), "uniqueItems": (16, _bool),
    "maxProperties": (17, _int64), "minProperties": (18, _int64),
    "discriminator": (26, _string), "readOnly": (27, _bool),
}


def schema(node: dict[str, Any]) -> bytes:
    out = []
    for key, value in node.items():
        if key in _SCHEMA_SCALARS:
            number, encode = _SCHEMA_SCALARS[key]
            out.append(encode(number, value))
        elif key == "default":
            out.append(_message(5, _any(value)))
        elif key == "required":
            out.extend(_string(19, name) for name in value)
        elif key == "enum":
            out.extend(_message(20, _any(item)) for item in value)
        elif key == "additionalProperties":
            item = _message(1, schema(value)) if isinstance(value, dict) else \
                _varint(2 << 3) + (b"\x01" if value else b"\x00")
            out.append(_message(21, item))
        elif key == "type":
            types = value if isinstance(value, list) else [value]
            out.append(_message(22, b"".join(_string(1, t) for t in types)))
        elif key == "items":
            items = value if isinstance(value, list) else [value]
            out.append(_message(23, b"".join(_message(1, schema(i)) for i in items)))
        elif key == "allOf":
            out.extend(_message(24, schema(item)) for item in value)
        elif key == "properties":
            out.append(_message(25, b"".join(_named(1, name, schema(prop))
                                             for name, prop in value.items())))
        elif key == "example":
            out.append(_message(30, _any(value)))
    out.append(_extensions(31, node))
    return b"".join(out)


def _parameter(param: dict[str, Any]) -> bytes:
    """A ParametersItem holding a Parameter: a body parameter, or a query, path, header or
    formData one (each its own message, with its own field numbers)."""
    where = param.get("in", "")
    if where == "body":
        body = _string(1, param.get("description", "")) + _string(2, param["name"]) + \
            _string(3, where) + _bool(4, param.get("required", False)) + \
            _message(5, schema(param.get("schema") or {})) + _extensions(6, param)
        return _message(1, _message(1, body))
    common = _bool(1, param.get("required", False)) + _string(2, where) + \
        _string(3, param.get("description", "")) + _string(4, param["name"])
    if where in ("query", "formData"):
        sub = common + _string(6, param.get("type", "")) + _string(7, param.get("format", "")) + \
            _bool(20, param.get("uniqueItems", False)) + _extensions(23, param)
        choice = 3 if where == "query" else 2
    else:  # path, header
        sub = common + _string(5, param.get("type", "")) + _string(6, param.get("format", "")) + \
            _bool(19, param.get("uniqueItems", False)) + _extensions(22, param)
        choice = 4 if where == "path" else 1
    return _message(1, _message(2, _message(choice, sub)))


def _operation(op: dict[str, Any]) -> bytes:
    out = [b"".join(_string(1, tag) for tag in op.get("tags", ())),
           _string(2, op.get("summary", "")), _string(3, op.get("description", "")),
           _string(5, op.get("operationId", "")),
           b"".join(_string(6, t) for t in op.get("produces", ())),
           b"".join(_string(7, t) for t in op.get("consumes", ())),
           b"".join(_message(8, _parameter(p)) for p in op.get("parameters", ()))]
    responses = b""
    for code, response in (op.get("responses") or {}).items():
        body = _string(1, response.get("description", ""))
        if "schema" in response:
            body += _message(2, _message(1, schema(response["schema"])))
        responses += _named(1, str(code), _message(1, body))
    out.append(_message(9, responses))
    out.append(b"".join(_string(10, s) for s in op.get("schemes", ())))
    out.append(_bool(11, op.get("deprecated", False)))
    out.append(_extensions(13, op))
    return b"".join(out)


_VERBS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(item: dict[str, Any]) -> bytes:
    out = [_message(number, _operation(item[verb])) for verb, number in _VERBS.items()
           if verb in item]
    out.extend(_message(9, _parameter(p)) for p in item.get("parameters", ()))
    out.append(_extensions(10, item))
    return b"".join(out)


def document(doc: dict[str, Any]) -> bytes:
    """A Swagger 2.0 document (as JSON data) as an `openapi_v2.Document` message."""
    info = doc.get("info") or {}
    out = [_string(1, doc.get("swagger", "2.0")),
           _message(2, _string(1, info.get("title", "")) + _string(2, info.get("version", ""))
                    + _extensions(7, info))]
    paths = b"".join(_named(2, path, _path_item(item))
                     for path, item in (doc.get("paths") or {}).items())
    out.append(_message(8, paths))
    out.append(_message(9, b"".join(_named(1, name, schema(definition))
                                    for name, definition in
                                    (doc.get("definitions") or {}).items())))
    out.append(_extensions(16, doc))
    return b"".join(out)
