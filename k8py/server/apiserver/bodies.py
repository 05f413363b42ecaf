"""Request bodies: size limit, media types, and decoding that cannot be turned against us.

- Bodies over 3 MiB are refused with 413 before they are parsed (upstream's limit).
- JSON and YAML are accepted for objects; patches by their own media types. YAML aliases are
  refused (an alias bomb is small on the wire and huge once expanded); documents nested more
  than 200 levels are a 400, not a crash deeper in the server.
- Kubernetes protobuf bodies (kubectl's typed `create` and `auth can-i`) are decoded into
  the same JSON form (`k8py.api.protobuf`); answers are always JSON, which kubectl accepts.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from k8py.api import errors, protobuf

MAX_BODY_BYTES = 3 * 1024 * 1024

JSON_TYPES = {"application/json", ""}
YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml"}
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"


def _compose_node(self, parent, index):
    if self.check_event(yaml.AliasEvent):
        event = self.peek_event()
        raise yaml.composer.ComposerError(None, None, "YAML aliases are not allowed",
                                          event.start_mark)
    return yaml.composer.Composer.compose_node(self, parent, index)


class _PureNoAliasLoader(yaml.SafeLoader):
    compose_node = _compose_node


async def read_raw(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.RequestEntityTooLarge("Request entity too large: limit is 3145728")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise errors.RequestEntityTooLarge("Request entity too large: limit is 3145728") from None


MAX_DEPTH = 200  # far deeper than any Kubernetes object; shallow enough for every walk


def _too_deep(document: Any) -> bool:
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False


def decode(raw: bytes, media_type: str) -> Any:
    """The document in raw, given its media type (without parameters); at most MAX_DEPTH
    levels deep, so no later step can run out of stack on it."""
    document = _decode(raw, media_type)
    if _too_deep(document):
        raise errors.BadRequest(f"the request body is nested more than {MAX_DEPTH} levels deep")
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
        return json.loads(raw)
    except RecursionError:
        raise errors.BadRequest("the request body is nested too deeply") from None
    except UnicodeDecodeError:
        raise errors.BadRequest("the request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise errors.BadRequest(f"the request body is not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise errors.BadRequest(f"the request body is not valid YAML: {exc}") from None


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
    return decode(raw, media)


OBJECT_TYPES = JSON_TYPES | YAML_TYPES
