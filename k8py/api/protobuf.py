"""Kubernetes protobuf request bodies, decoded into the JSON form every other path uses.

kubectl 1.32's typed clients send `application/vnd.kubernetes.protobuf`: every typed `kubectl
create <kind>` (configmap, secret, namespace, service, serviceaccount, deployment, job,
cronjob, ingress, role, clusterrole, rolebinding, clusterrolebinding, quota, priorityclass,
poddisruptionbudget, and `create token`'s TokenRequest), `create job --from=cronjob/...` (a
whole defaulted pod template), `auth can-i`, and `drain` (a policy/v1 `Eviction` per pod, or
a `DeleteOptions` body on a pod delete). A body is the 4 bytes
`k8s\\x00`, then a `runtime.Unknown` whose `typeMeta` names the kind and whose `raw` holds the
object's own protobuf message. This module reads the protobuf wire format against the tables
of upstream messages in `protobuf_messages` and turns each message into its JSON shape,
including upstream's special JSON forms: `Time` as an RFC 3339 string (the zero Time left
out, as Go's JSON writes null), `Quantity` as a string, `IntOrString` as a number or string,
`FieldsV1` as the JSON object it wraps, `bytes` as base64, and the inline members
(`Probe.handler`, `Volume.volumeSource`). Zero scalars are left out where Go's JSON would
leave them out (`omitempty` on a non-pointer field).

A field the tables do not know is an error naming it (`ProtobufError`, answered 400), never
silently dropped: losing part of an object would be worse than refusing it.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

from k8py.api.protobuf_messages import B, BOOL, I32, I64, KEEP, MESSAGES, REP, S, root_message

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    pass


_SPECIAL = ("Time", "Quantity", "IntOrString", "FieldsV1")


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(data: bytes):
    """(field number, wire type, value) for each field of one message."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > len(data):
                raise ProtobufError("truncated field")
            value, i = data[i:i + length], i + length
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if i > len(data):
            raise ProtobufError("truncated field")
        yield number, wire, value


def _signed(value: int, bits: int) -> int:
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if bits == 32 and not -(1 << 31) <= value < (1 << 31):
        raise ProtobufError("int32 out of range")
    return value


def _scalar(kind: str, wire: int, value: Any) -> Any:
    if kind in (S, B):
        if wire != 2:
            raise ProtobufError(f"{kind} with wire type {wire}")
        if kind == B:
            return base64.b64encode(value).decode()
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtobufError("a string is not valid UTF-8") from None
    if wire != 0:
        raise ProtobufError(f"{kind} with wire type {wire}")
    if kind == BOOL:
        return bool(value)
    return _signed(value, 32 if kind == I32 else 64)


def _number(name: str, wire: int, value: Any) -> int:
    """A varint field of one of the special messages, which must be one."""
    if wire != 0:
        raise ProtobufError(f"{name}: a number with wire type {wire}")
    return value


# the times RFC 3339 can write: years 1 to 9999 (Go's JSON refuses the rest too)
_FIRST_SECOND, _LAST_SECOND = -62_135_596_800, 253_402_300_799


def _special(name: str, data: bytes) -> Any:
    if name == "Time":
        seconds = nanos = 0
        for number, wire, value in _fields(data):
            if number == 1:
                seconds = _signed(_number(name, wire, value), 64)
            elif number == 2:
                nanos = _number(name, wire, value)
        if not seconds and not nanos:
            return None  # Go's zero Time, which its JSON writes as null: left out
        if not _FIRST_SECOND <= seconds <= _LAST_SECOND:
            raise ProtobufError(f"the time of {seconds} seconds is outside the years 1 to 9999")
        moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%SZ")  # %Y: no padding
    if name == "Quantity":
        for number, wire, value in _fields(data):
            if number == 1:
                return _scalar(S, wire, value)
        return "0"
    if name == "IntOrString":
        kind, int_value, str_value = 0, 0, ""
        for number, wire, value in _fields(data):
            if number == 1:
                kind = _number(name, wire, value)
            elif number == 2:
                int_value = _signed(_number(name, wire, value), 32)
            elif number == 3:
                str_value = _scalar(S, wire, value)
        if kind not in (0, 1):  # Go's JSON has no form for any other type
            raise ProtobufError(f"an IntOrString of type {kind}")
        return str_value if kind == 1 else int_value
    if name == "FieldsV1":  # managedFields: the JSON object, as raw bytes
        for number, wire, value in _fields(data):
            if number == 1 and wire == 2:
                try:
                    return json.loads(value)
                except (ValueError, RecursionError):  # the nesting is checked by the caller
                    raise ProtobufError("fieldsV1 is not valid JSON (or nested too deeply)") from None
        return {}
    raise KeyError(name)


def _decode_value(kind: Any, wire: int, value: Any, where: str) -> Any:
    if isinstance(kind, str) and kind in (S, B, I32, I64, BOOL):
        return _scalar(kind, wire, value)
    if wire != 2:
        raise ProtobufError(f"{where}: a message with wire type {wire}")
    if kind in _SPECIAL:
        return _special(kind, value)
    return decode_message(kind, value, where)


def decode_message(name: str, data: bytes, where: str = "") -> dict[str, Any]:
    table = MESSAGES.get(name)
    if table is None:
        raise ProtobufError(f"{where or name}: k8py does not decode protobuf {name} yet; "
                            "send JSON instead")
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        spec = table.get(number)
        if spec is None:
            raise ProtobufError(f"{where or name}: field {number} of {name} is not decoded by "
                                "k8py yet; send JSON instead")
        json_name, kind = spec[0], spec[1]
        path = f"{where}.{json_name}" if where else json_name
        if isinstance(kind, tuple):  # a map entry: key = 1, value = 2
            if wire != 2:
                raise ProtobufError(f"{path}: a map entry with wire type {wire}")
            key, item = "", None
            for n, w, v in _fields(value):
                if n == 1:
                    key = _scalar(kind[1], w, v)
                elif n == 2:
                    item = _decode_value(kind[2], w, v, f"{path}[{key}]")
            if item is None:
                item = "" if kind[2] in (S, B) else ({} if kind[2] not in ("Quantity",) else "0")
            out.setdefault(json_name, {})[key] = item
        elif REP in spec[2:]:
            if wire == 2 and kind in (I32, I64, BOOL):  # packed
                i, items = 0, []
                while i < len(value):
                    v, i = _varint(value, i)
                    items.append(_scalar(kind, 0, v))
                out.setdefault(json_name, []).extend(items)
            else:
                out.setdefault(json_name, []).append(_decode_value(kind, wire, value, path))
        elif json_name == "":  # an inline member: its fields sit in this object
            out.update(_decode_value(kind, wire, value, where))
        else:
            decoded = _decode_value(kind, wire, value, path)
            # Go writes every non-pointer scalar, zero or not; its JSON (omitempty) leaves
            # zero ones out, and so does this unless the field keeps them (KEEP).
            if decoded is None:
                continue
            if KEEP not in spec[2:] and kind in (S, B, I32, I64, BOOL) and \
                    decoded in ("", 0, False):
                continue
            out[json_name] = decoded
    return out


def decode_body(body: bytes) -> dict[str, Any]:
    """A Kubernetes protobuf request body as the JSON object it stands for."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf prefix")
    unknown = decode_message("Unknown", body[len(MAGIC):])
    type_meta = unknown.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    root = root_message(api_version, kind)
    if root is None:
        raise ProtobufError(f"k8py does not decode protobuf {kind or 'objects'} "
                            f"({api_version or 'no apiVersion'}) yet; send JSON instead")
    raw = base64.b64decode(unknown.get("raw", ""))
    obj = decode_message(root, raw)
    return {"apiVersion": api_version, "kind": kind, **obj}
