"""Decoding Kubernetes protobuf bodies, against bytes built by hand from the wire format."""

from __future__ import annotations

import pytest

from k8py.api.protobuf import MAGIC, ProtobufError, decode_body


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = field(1, api_version.encode()) + field(2, kind.encode())
    return MAGIC + field(1, type_meta) + field(2, raw) + field(3, b"") + field(4, b"")


def test_configmap_with_labels_and_data():
    metadata = field(1, b"cm") + field(3, b"") + field(11, field(1, b"app") + field(2, b"x"))
    raw = field(1, metadata) + field(2, field(1, b"k") + field(2, b"v")) + \
        field(2, field(1, b"empty") + field(2, b""))
    obj = decode_body(envelope("v1", "ConfigMap", raw))
    assert obj == {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cm", "labels": {"app": "x"}},
                   "data": {"k": "v", "empty": ""}}


def test_deployment_with_int_or_string_quantity_and_negative_numbers():
    container = field(1, b"web") + field(2, b"nginx") + \
        field(6, field(3, 80)) + \
        field(8, field(1, field(1, b"cpu") + field(2, field(1, b"500m"))))
    pod_spec = field(2, container) + field(4, (1 << 64) - 1)  # terminationGracePeriod -1
    strategy = field(2, field(1, field(1, 1) + field(3, b"25%")) + field(2, field(2, 1)))
    spec = field(1, 3) + field(3, field(2, pod_spec)) + field(4, strategy)
    obj = decode_body(envelope("apps/v1", "Deployment", field(1, field(1, b"d")) + field(2, spec)))
    assert obj["spec"]["replicas"] == 3
    assert obj["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": 1}
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"containerPort": 80}]
    assert container["resources"] == {"limits": {"cpu": "500m"}}
    assert obj["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == -1


def test_secret_bytes_become_base64():
    raw = field(1, field(1, b"s")) + field(2, field(1, b"p") + field(2, b"q"))
    assert decode_body(envelope("v1", "Secret", raw))["data"] == {"p": "cQ=="}


@pytest.mark.parametrize("body, message", [
    (b"not protobuf", "prefix"),
    (MAGIC + b"\x0a\x05ab", "truncated"),
    (envelope("v1", "Pod", b""), "does not decode protobuf Pod"),
    (envelope("v1", "ConfigMap", field(99, b"x")), "field 99 of ConfigMap"),
    (envelope("v1", "ConfigMap", field(1, field(1, b"\xff\xfe"))), "UTF-8"),
])
def test_bad_bodies_are_named(body, message):
    with pytest.raises(ProtobufError, match=message):
        decode_body(body)
