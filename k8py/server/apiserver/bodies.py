"""Request bodies: size limit, media types, and decoding that cannot be turned against us.

- Bodies over 3 MiB are refused with 413 before they are parsed (upstream's limit).
- JSON and YAML are accepted for objects; patches by their own media types. YAML aliases are
  refused (an alias bomb is small on the wire and huge once expanded).
- Every decoded body is strict JSON, checked once here: nested at most 200 levels, no NaN or
  Infinity, integers within int64, strings valid Unicode (no lone surrogates), string keys.
  Anything else is a 400, never a crash deeper in the server nor a stored object that no
  client can read back. YAML keeps timestamps as the text written (as upstream's decoder
  does), stringifies scalar keys, and refuses tags JSON has no equivalent for (`!!binary`).
- JSON is UTF-8 without a byte order mark, as Go reads it (not UTF-16 or UTF-32).
- Each decoded body is handed to the audit log (`audit.log_request_object`), which keeps it
  when the request is audited at level Request or up.
- Kubernetes protobuf bodies (kubectl's typed `create` and `auth can-i`) are decoded into
  the same JSON form (`k8py.api.protobuf`); answers are always JSON, which kubectl accepts.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import yaml
from aiohttp import web

from k8py.api import errors, protobuf
from k8py.api.pruning import INT64_MAX, INT64_MIN
from k8py.server.apiserver import audit

MAX_BODY_BYTES = 3 * 1024 * 1024

JSON_TYPES = {"application/json", ""}
YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml"}
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
PATCH_TYPES = {MERGE_PATCH, JSON_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH}


def _compose_node(self, parent, index):
    if self.check_event(yaml.AliasEvent):
        event = self.peek_event()
        raise yaml.composer.ComposerError(None, None, "YAML aliases are not allowed",
                                          event.start_mark)
    return yaml.composer.Composer.compose_node(self, parent, index)


def _json_key(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    """A mapping key as JSON has it: YAML's scalar keys become strings, as upstream's
    sigs.k8s.io/yaml does (`8080: tcp` is the key "8080"); other keys are refused."""
    key = loader.construct_object(node, deep=True)
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int) or (isinstance(key, float) and math.isfinite(key)):
        return str(key)
    if key is None:
        return "null"
    raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a string",
                                            node.start_mark)


def _construct_mapping(self, node, deep=False):
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(None, None, "expected a mapping",
                                                node.start_mark)
    self.flatten_mapping(node)
    return {_json_key(self, key): self.construct_object(value, deep=deep)
            for key, value in node.value}


def _timestamp_as_text(self, node):
    # Go's YAML decoder keeps timestamp-like values as strings unless the target is a
    # time.Time; objects are plain JSON here, so they stay the text that was written.
    return self.construct_scalar(node)


def _refused_tag(self, node):
    raise yaml.constructor.ConstructorError(
        None, None, f"the YAML tag {node.tag!r} has no JSON equivalent", node.start_mark)


class _PureNoAliasLoader(yaml.SafeLoader):
    compose_node = _compose_node
    construct_mapping = _construct_mapping


_PureNoAliasLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)
for _tag in ("binary", "set", "omap", "pairs"):
    _PureNoAliasLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refused_tag)


BODY_TIMEOUT = 60.0  # seconds a client has to send a body: upstream's request timeout


async def read_raw(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.RequestEntityTooLarge("Request entity too large: limit is 3145728")
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.RequestEntityTooLarge("Request entity too large: limit is 3145728") from None
    except asyncio.TimeoutError:
        if request.transport is not None:
            request.transport.abort()  # the client is too slow to be worth an answer
        raise ConnectionResetError("the request body did not arrive in time") from None


MAX_DEPTH = 200  # far deeper than any Kubernetes object; shallow enough for every walk
_INT64_DIGITS = 19


def _problem(document: Any) -> str | None:
    """Why `document` is not a strict JSON document, or None: nested more than MAX_DEPTH
    levels, a string or key that UTF-8 cannot encode (a lone surrogate such as "\\ud800"),
    an integer outside int64, a float that is not finite, a non-string key, or a value of a
    type JSON does not have. One walk, iterative, so no depth can exhaust the stack."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"the request body is nested more than {MAX_DEPTH} levels deep"
        kind = value.__class__
        if kind is str:
            if not value.isascii() and _unencodable(value):
                return "the request body holds a string that is not valid Unicode"
        elif kind is dict:
            for key, item in value.items():
                if key.__class__ is not str:
                    return "the request body holds an object key that is not a string"
                if not key.isascii() and _unencodable(key):
                    return "the request body holds a key that is not valid Unicode"
                stack.append((item, depth + 1))
        elif kind is list:
            stack.extend((item, depth + 1) for item in value)
        elif kind is int:
            if not INT64_MIN <= value <= INT64_MAX:
                return f"the number {value} does not fit in a 64-bit integer"
        elif kind is float:
            if not math.isfinite(value):
                return f"the number {value} is not a finite number"
        elif value is not None and kind is not bool:
            return f"the request body holds a value of type {kind.__name__}, which JSON has not"
    return None


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _json_int(text: str) -> int:
    # Refuse before converting: Python refuses 4,300 digits and more with a ValueError.
    if len(text.lstrip("-")) > _INT64_DIGITS:
        raise ValueError(f"the number {text[:24]}... does not fit in a 64-bit integer")
    return int(text)


def _json_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def decode(raw: bytes, media_type: str) -> Any:
    """The document in raw, given its media type (without parameters), checked to be strict
    JSON (`_problem`): no later step can run out of stack on it, and whatever is stored from
    it encodes again as JSON every client can read."""
    document = _decode(raw, media_type)
    problem = _problem(document)
    if problem:
        raise errors.BadRequest(problem)
    return document


def _decode(raw: bytes, media_type: str) -> Any:
    if media_type == PROTOBUF:
        try:
            return protobuf.decode_body(raw)
        except protobuf.ProtobufError as exc:
            raise errors.BadRequest(f"the protobuf body cannot be decoded: {exc}") from None
    try:
        if media_type in YAML_TYPES or media_type == APPLY_PATCH:
            documents = list(yaml.load_all(raw, Loader=_PureNoAliasLoader))
            if len(documents) != 1:
                raise errors.BadRequest("the request body must hold exactly one YAML document")
            return documents[0]
        # UTF-8 only, as Go's decoder: given bytes, Python's would also take UTF-16 and
        # UTF-32 and skip a byte order mark, none of which upstream accepts
        return json.loads(raw.decode("utf-8"), parse_int=_json_int,
                          parse_constant=_json_constant)
    except RecursionError:
        raise errors.BadRequest("the request body is nested too deeply") from None
    except UnicodeDecodeError:
        raise errors.BadRequest("the request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise errors.BadRequest(f"the request body is not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise errors.BadRequest(f"the request body is not valid YAML: {exc}") from None
    except ValueError as exc:  # a number out of range, NaN or Infinity
        raise errors.BadRequest(f"the request body is not valid JSON: {exc}") from None


def media_type(request: web.Request) -> str:
    """The request's media type, lower case, without parameters; "" when it has none."""
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


async def read_document(request: web.Request, allowed: set[str]) -> Any:
    """The request's body, decoded. A request of the in-process transport carries its body
    already decoded (`parsed_body`), and only that is returned."""
    # No Content-Type header means JSON, as upstream (the Python client sends none on create).
    media = media_type(request)
    if media not in allowed and media != PROTOBUF:
        raise errors.UnsupportedMediaType(
            f'the body of the request was in an unknown format - accepted media types include: '
            f'{", ".join(sorted(t for t in allowed if t))}'
        )
    parsed = getattr(request, "parsed_body", None)
    if parsed is not None:
        return parsed
    raw = await read_raw(request)
    if not raw.strip():
        return None
    document = decode(raw, media)
    audit.log_request_object(request, document, patch=media in PATCH_TYPES)
    return document


OBJECT_TYPES = JSON_TYPES | YAML_TYPES
