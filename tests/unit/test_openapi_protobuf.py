"""OpenAPI v2 as gnostic protobuf: content negotiation, and the encoding read back with a
minimal wire reader (field numbers of gnostic's OpenAPIv2.proto)."""

from __future__ import annotations

import struct

import pytest
import yaml

from k8py.api.resources import Registry
from k8py.server.apiserver import openapi, openapi_protobuf

PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


@pytest.mark.parametrize("accept, media", [
    ("", "application/json"),
    (PROTOBUF, openapi_protobuf.CONTENT_TYPE),  # client-go; answered without the "@"
    ("application/json", "application/json"),
    ("*/*", "application/json"),
    (f"application/json;q=0.5, {PROTOBUF}", openapi_protobuf.CONTENT_TYPE),
    (f"{PROTOBUF};q=0, application/json", "application/json"),
    ("text/html", None),
])
def test_media_type(accept, media):
    assert openapi.v2_media_type(accept) == media


def _fields(data: bytes) -> list[tuple[int, object]]:
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        if key & 7 == 0:
            value, i = _varint(data, i)
        elif key & 7 == 2:
            length, i = _varint(data, i)
            value, i = data[i:i + length], i + length
        else:
            value, i = data[i:i + 8], i + 8
        out.append((key >> 3, value))
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def _named(data: bytes) -> dict[str, bytes]:
    return {bytes(dict(_fields(entry))[1]).decode(): dict(_fields(entry))[2]
            for _, entry in _fields(data)}


def test_document_definitions_carry_kinds_and_types():
    doc = dict(_fields(openapi.v2_document(Registry(), protobuf=True)))
    assert doc[1] == b"2.0"
    definitions = _named(doc[9])
    config_map = dict(_fields(definitions["io.k8s.api.core.v1.ConfigMap"]))
    assert dict(_fields(config_map[22])) == {1: b"object"}  # type
    properties = _named(config_map[25])
    assert dict(_fields(properties["metadata"]))[1] == \
        b"#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in definitions
    extensions = {bytes(dict(_fields(v))[1]).decode(): dict(_fields(dict(_fields(v))[2]))[2]
                  for n, v in _fields(definitions["io.k8s.api.core.v1.ConfigMap"]) if n == 31}
    assert yaml.safe_load(extensions["x-kubernetes-group-version-kind"]) == [
        {"group": "", "kind": "ConfigMap", "version": "v1"}]


def test_schema_keywords():
    encoded = openapi_protobuf.schema({
        "type": "array", "items": {"type": "integer", "format": "int32", "minimum": -1},
        "required": ["a"], "additionalProperties": False, "oneOf": [{"type": "string"}]})
    fields = _fields(encoded)
    assert (22, b"\n\x05array") in fields and (19, b"a") in fields
    assert (21, b"\x10\x00") in fields  # additionalProperties: false
    item = dict(_fields(dict(_fields(dict(fields)[23]))[1]))
    assert item[2] == b"int32" and struct.unpack("<d", item[9]) == (-1.0,)
    assert len(fields) == 4  # oneOf has no Swagger 2.0 field
