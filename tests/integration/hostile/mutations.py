"""Hostile request bodies: valid documents mutated at random (one seeded `random.Random`,
so a failing seed replays), for JSON, YAML and Kubernetes protobuf.

Each generator yields `(label, bytes)`; the label names the mutation, so a failure says
which one. The protobuf encoder here is the wire format written out by hand (varints,
length-delimited fields, the `k8s\\x00` envelope around a `runtime.Unknown`), enough to
build valid ConfigMaps and Pods and then break them.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from typing import Any

import yaml

CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "fz", "labels": {"app": "fz"}, "annotations": {"a": "b"}},
             "data": {"key": "value", "other": "x"}, "binaryData": {"bin": "aGVsbG8="}}
POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "fz", "labels": {"app": "fz"}},
       "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "x"],
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                                "env": [{"name": "A", "value": "1"}]}],
                "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]}}

# what replaces a value: every JSON type, and the edges of each
WRONG_VALUES: list[Any] = [
    None, True, False, 0, -1, 2 ** 63 - 1, -(2 ** 63), 1.5, -0.0, 1e308, "", "x", "80",
    "100m", "1Gi", "2024-01-01T00:00:00Z", "\u0000", "\u202e", "é" * 40, [], [None], {},
    {"": ""}, [[[[]]]], {"a": {"b": {"c": {}}}}, "x" * 70_000, list(range(300)),
]
# textual replacements JSON decoders disagree on or must refuse
RAW_VALUES = [b"NaN", b"-Infinity", b"1e999", b"-1e999", b"1" * 400, b"-" + b"9" * 30,
              b"9223372036854775808", b"0x10", b"01", b"1.", b".5", b"+1", b"true1",
              b'"\\ud800"', b'"\\udfff\\ud800"', b'"\\u0000"', b'"\\x41"', b"'single'",
              b"[1,]", b"{,}", b"nul", b'"' + b"\\" * 3 + b'"', b"\xff\xfe", b"\xc0\xaf",
              b"\xed\xa0\x80", b"[" * 5000, b"{}" * 3]


def paths(document: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path to a value in a JSON document, the root included."""
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from paths(value, prefix + (index,))


def replaced(document: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    copied = copy.deepcopy(document)
    node = copied
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return copied


def wrong_types(document: dict, rng: random.Random) -> Iterator[tuple[str, Any]]:
    """Each path of the document with a value of another type (or an edge value)."""
    for path in paths(document):
        for value in rng.sample(WRONG_VALUES, 3):
            yield f"{'.'.join(map(str, path)) or '<root>'}={str(value)[:20]!r}", \
                replaced(document, path, value)


def json_bodies(document: dict, rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    """Valid JSON with wrong types at every field, then `count` textual mutations."""
    for label, mutated in wrong_types(document, rng):
        yield "type " + label, json.dumps(mutated).encode()
    text = json.dumps(document).encode()
    for _ in range(count):
        kind = rng.choice(["truncate", "flip", "insert", "raw value", "duplicate key",
                           "invalid utf-8", "bom", "utf-16", "control", "splice"])
        at = rng.randrange(len(text))
        if kind == "truncate":
            body = text[:at]
        elif kind == "flip":
            body = text[:at] + bytes([rng.randrange(256)]) + text[at + 1:]
        elif kind == "insert":
            body = text[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) \
                + text[at:]
        elif kind == "raw value":  # a literal after some colon
            colons = [i for i, c in enumerate(text) if c == ord(":")]
            colon = rng.choice(colons)
            end = colon + 1
            while end < len(text) and text[end] not in b",}]":
                end += 1
            body = text[:colon + 1] + rng.choice(RAW_VALUES) + text[end:]
        elif kind == "duplicate key":
            body = text.replace(b'"name": "fz"', b'"name": "fz", "name": ' +
                                rng.choice([b'"fz2"', b"5", b"null", b"{}"]), 1)
        elif kind == "invalid utf-8":
            body = text[:at] + rng.choice([b"\xff", b"\xc3", b"\xe2\x82", b"\xf4\x90\x80\x80",
                                           b"\xed\xb2\x80"]) + text[at:]
        elif kind == "bom":
            body = b"\xef\xbb\xbf" + text
        elif kind == "utf-16":
            body = text.decode().encode(rng.choice(["utf-16", "utf-16-le", "utf-32"]))
        elif kind == "control":
            body = text[:at] + bytes([rng.randrange(32)]) + text[at:]
        else:  # a piece of the document pasted somewhere else
            start = rng.randrange(len(text))
            body = text[:at] + text[start:start + rng.randint(1, 40)] + text[at:]
        yield kind, body


YAML_SNIPPETS = [b"!!python/object/apply:os.system ['true']", b"!!binary aGVsbG8=", b".nan",
                 b".inf", b"-.inf", b"0x7fffffffffffffffff", b"0o777", b"1_000", b"2024-01-01",
                 b"~", b"[a, b", b"{a: 1", b"&x 1", b"*x", b"*undefined", b"? [a]: b", b"|",
                 b">-\n  folded", b"\t", b"%YAML 1.1", b"---", b"...", b"<<: {a: 1}",
                 b"!!set {a}", b"!!omap [a: 1]", b"!custom x", b'"\\ud800"', b'"\\x00"',
                 b"7" * 5000, b"'" + b"x" * 10 + b"''", b"[" * 2000, b"- " * 500 + b"x"]


def yaml_bodies(document: dict, rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    """Valid YAML with wrong types at some fields, then `count` textual mutations."""
    for label, mutated in wrong_types(document, rng):
        if rng.random() < 0.3:
            yield "type " + label, yaml.safe_dump(mutated).encode()
    text = yaml.safe_dump(document).encode()
    lines = text.split(b"\n")
    for _ in range(count):
        kind = rng.choice(["truncate", "flip", "snippet", "indent", "invalid utf-8",
                           "bom", "anchor"])
        at = rng.randrange(len(text))
        if kind == "truncate":
            body = text[:at]
        elif kind == "flip":
            body = text[:at] + bytes([rng.randrange(256)]) + text[at + 1:]
        elif kind == "snippet":  # a value replaced by a YAML construct
            index = rng.randrange(len(lines))
            line = lines[index]
            head = line.split(b":", 1)[0] + b": " if b":" in line else line[:0]
            body = b"\n".join(lines[:index] + [head + rng.choice(YAML_SNIPPETS)] +
                              lines[index + 1:])
        elif kind == "indent":
            index = rng.randrange(len(lines))
            body = b"\n".join(lines[:index] + [b" " * rng.randint(1, 9) + lines[index]] +
                              lines[index + 1:])
        elif kind == "invalid utf-8":
            body = text[:at] + b"\xff\xfe\xc3" + text[at:]
        elif kind == "bom":
            body = b"\xef\xbb\xbf" + text
        else:  # an anchor on one value, aliases to it elsewhere
            body = text.replace(b"name: fz", b"name: &n fz", 1) + b"extra: [*n, *n]\n"
        yield kind, body


# --- Kubernetes protobuf ------------------------------------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes | int) -> bytes:
    """One field: an int is a varint (wire type 0), bytes are length-delimited (2)."""
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = field(1, api_version.encode()) + field(2, kind.encode())
    return b"k8s\x00" + field(1, type_meta) + field(2, raw)


def _entry(key: str, value: str) -> bytes:
    return field(1, key.encode()) + field(2, value.encode())


def protobuf_configmap(name: str = "fz") -> bytes:
    metadata = field(1, name.encode()) + field(11, _entry("app", "fz")) + \
        field(12, _entry("a", "b"))
    return field(1, metadata) + field(2, _entry("key", "value")) + \
        field(3, field(1, b"bin") + field(2, b"hello"))


def protobuf_pod(name: str = "fz") -> bytes:
    port = field(3, 80) + field(4, b"TCP")
    limits = field(1, field(1, b"cpu") + field(2, field(1, b"100m")))  # limits: {cpu: 100m}
    container = field(1, b"c") + field(2, b"busybox") + field(3, b"sh") + field(6, port) + \
        field(8, limits)
    spec = field(2, container) + field(3, b"Always") + field(4, 30)
    return field(1, field(1, name.encode())) + field(2, spec)


def protobuf_bodies(rng: random.Random, count: int) -> Iterator[tuple[str, str, bytes]]:
    """(label, kind, body): random bytes, every truncation of valid messages, wrong lengths,
    wrong wire types, out-of-range times, and nesting as deep as the body allows."""
    valid = {"ConfigMap": protobuf_configmap(), "Pod": protobuf_pod()}
    for kind, raw in valid.items():
        whole = envelope("v1", kind, raw)
        yield "valid", kind, whole
        for cut in range(len(whole)):
            yield f"truncated at {cut}", kind, whole[:cut]
        for at in range(4, len(whole)):  # each byte (a length, a key, a value) altered
            for value in (0x00, 0x7F, 0xFF, whole[at] ^ 0x01):
                yield f"byte {at} = {value}", kind, whole[:at] + bytes([value]) + whole[at + 1:]
    for _ in range(count):
        size = rng.choice([0, 1, 4, 16, 200, 5000])
        noise = bytes(rng.randrange(256) for _ in range(size))
        yield "random", "ConfigMap", rng.choice([noise, b"k8s\x00" + noise])
        yield "random raw", "ConfigMap", envelope("v1", "ConfigMap", noise)
    metadata = field(1, b"fz")
    for label, extra in [
        ("time seconds huge", field(8, field(1, 2 ** 62))),
        ("time seconds negative", field(8, field(1, -(2 ** 62)))),
        ("time seconds at year 0", field(8, field(1, -62_135_596_801))),
        ("time nanos huge", field(8, field(2, 2 ** 40))),
        ("time as a string", field(8, field(1, b"soon"))),
        ("time with a fixed64", field(8, varint(1 << 3 | 1) + b"\x00" * 8)),
        ("generation as bytes", field(7, b"seven")),
        ("labels entry with a varint key", field(11, field(1, 5))),
        ("labels entry with a message value", field(11, field(1, b"k") + field(2, 9))),
        ("managedFields fieldsV1 nested deep", field(17, field(7, field(1, b'{"a":' * 50_000 +
                                                                        b"1" + b"}" * 50_000)))),
        ("managedFields fieldsV1 not JSON", field(17, field(7, field(1, b"\xff{")))),
        ("managedFields fieldsV1 NaN", field(17, field(7, field(1, b'{"a": NaN}')))),
        ("managedFields time huge", field(17, field(4, field(1, 2 ** 60)))),
        ("length past the end", varint(1 << 3 | 2) + varint(2 ** 40) + b"x"),
        ("length of 2^64-1", varint(1 << 3 | 2) + varint(2 ** 64 - 1)),
        ("varint of 11 bytes", varint(7 << 3) + b"\xff" * 10 + b"\x01"),
        ("wire type 3 (group)", varint(1 << 3 | 3)),
        ("wire type 7", varint(1 << 3 | 7)),
        ("field 0", varint(0) + b"\x00"),
        ("fixed32 cut short", varint(7 << 3 | 5) + b"\x00\x00"),
    ]:
        yield label, "ConfigMap", envelope("v1", "ConfigMap", field(1, metadata + extra))
    # IntOrString and Quantity in a pod, broken
    for label, port in [("intorstr type huge", field(1, 2 ** 63)),
                        ("intorstr int as bytes", field(1, 0) + field(2, b"80")),
                        ("intorstr string as varint", field(1, 1) + field(3, 80))]:
        probe = field(1, field(3, field(1, port)))  # readinessProbe.tcpSocket.port
        container = field(1, b"c") + field(2, b"busybox") + field(11, probe)
        yield label, "Pod", envelope("v1", "Pod", field(1, field(1, b"fz")) +
                                     field(2, field(2, container)))
    quantity = field(1, b"cpu") + field(2, field(1, 5))  # a Quantity whose string is a varint
    container = field(1, b"c") + field(2, b"busybox") + field(8, field(1, quantity))
    yield "quantity as varint", "Pod", envelope("v1", "Pod", field(1, field(1, b"fz")) +
                                                field(2, field(2, container)))
    # nesting: messages inside messages as deep as the body's size allows
    nested = b"x"
    for _ in range(2000):
        nested = field(1, nested)
    yield "nested 2000 deep", "ConfigMap", envelope("v1", "ConfigMap", nested)
    yield "unknown kind", "ConfigMap", envelope("v1", "Nope", b"")
    yield "no raw", "ConfigMap", b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"ConfigMap"))
