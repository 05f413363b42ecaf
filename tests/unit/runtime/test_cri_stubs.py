"""The generated CRI stubs (`cri_pb2.py`, `cri_grpc.py`) say what `cri.proto` says: every
message with its fields (name, number, repeated or not, type), every enum with its values,
every RPC of both services. A stub left behind after an edit of the .proto fails here; the
regeneration command is in cri.proto's header."""

from __future__ import annotations

import os
import re

from google.protobuf.descriptor import FieldDescriptor

from k8py.runtime import cri_grpc, cri_pb2

PROTO = os.path.join(os.path.dirname(cri_pb2.__file__), "cri.proto")
SCALARS = {"string": FieldDescriptor.TYPE_STRING, "bytes": FieldDescriptor.TYPE_BYTES,
           "bool": FieldDescriptor.TYPE_BOOL, "int32": FieldDescriptor.TYPE_INT32,
           "int64": FieldDescriptor.TYPE_INT64, "uint32": FieldDescriptor.TYPE_UINT32,
           "uint64": FieldDescriptor.TYPE_UINT64, "double": FieldDescriptor.TYPE_DOUBLE}
FIELD = re.compile(r"^(repeated\s+)?(map<\s*\w+\s*,\s*\w+\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)")


def _parse(text: str):
    """(messages, enums, rpcs) from the .proto text: message -> {field: (number, repeated,
    type)}, enum -> {value: number}, service -> [rpc names]. Nested definitions are named
    Outer.Inner, as the descriptors name them."""
    text = re.sub(r"//[^\n]*", "", text)
    messages, enums, services = {}, {}, {}
    stack: list[tuple[str, str]] = []  # (kind, full name)
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        opened = re.match(r"^(message|enum|service)\s+(\w+)\s*\{", line)
        if opened:
            kind, name = opened.groups()
            parent = next((n for k, n in reversed(stack) if k == "message"), None)
            full = f"{parent}.{name}" if parent else name
            stack.append((kind, full))
            {"message": messages, "enum": enums, "service": services}[kind][full] = \
                {} if kind != "service" else []
            if line.endswith("}"):  # empty, on one line
                stack.pop()
            continue
        if line.startswith("}"):
            if stack:
                stack.pop()
            continue
        if not stack:
            continue
        kind, name = stack[-1]
        if kind == "service":
            rpc = re.match(r"^rpc\s+(\w+)", line)
            if rpc:
                services[name].append(rpc.group(1))
        elif kind == "enum":
            value = re.match(r"^(\w+)\s*=\s*(\d+)", line)
            if value:
                enums[name][value.group(1)] = int(value.group(2))
        else:
            field = FIELD.match(line)
            if field:
                repeated, type_name, field_name, number = field.groups()
                messages[name][field_name] = (int(number), bool(repeated) or
                                              type_name.startswith("map<"), type_name)
    return messages, enums, services


def test_every_message_and_field_matches_the_proto():
    with open(PROTO, encoding="utf-8") as f:
        messages, _, _ = _parse(f.read())
    file = cri_pb2.DESCRIPTOR
    described = {}

    def collect(descriptor, prefix=""):
        name = prefix + descriptor.name
        if not descriptor.GetOptions().map_entry:
            described[name] = descriptor
        for nested in descriptor.nested_types:
            collect(nested, name + ".")
    for descriptor in file.message_types_by_name.values():
        collect(descriptor)
    assert set(described) == set(messages)
    for name, fields in messages.items():
        descriptor = described[name]
        assert {f.name for f in descriptor.fields} == set(fields), name
        for field in descriptor.fields:
            number, repeated, type_name = fields[field.name]
            assert field.number == number, (name, field.name)
            assert field.is_repeated == repeated, (name,
                                                   field.name)
            if type_name in SCALARS:
                assert field.type == SCALARS[type_name], (name, field.name)
            elif not type_name.startswith("map<"):
                target = field.message_type or field.enum_type
                assert target is not None and target.name == type_name.rsplit(".", 1)[-1], \
                    (name, field.name)


def test_every_enum_and_rpc_matches_the_proto():
    with open(PROTO, encoding="utf-8") as f:
        _, enums, services = _parse(f.read())
    file = cri_pb2.DESCRIPTOR
    described = {e.name: e for e in file.enum_types_by_name.values()}
    for message in file.message_types_by_name.values():
        described.update({f"{message.name}.{e.name}": e for e in message.enum_types})
    assert set(described) == set(enums)
    for name, values in enums.items():
        assert {v.name: v.number for v in described[name].values} == values, name
    assert set(file.services_by_name) == set(services)
    for name, rpcs in services.items():
        assert [m.name for m in file.services_by_name[name].methods] == rpcs, name
        stub = getattr(cri_grpc, f"{name}Stub")
        for rpc in rpcs:
            assert hasattr(stub(channel=_Channel()), rpc), (name, rpc)


class _Channel:
    """Enough of a grpclib channel for a stub to be built without connecting."""

    def request(self, *args, **kwargs):  # pragma: no cover - never called
        raise AssertionError("not connected")
