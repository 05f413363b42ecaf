"""OpenAPI documents built from the upstream schemas: v3 per group-version, and v2.

`GET /openapi/v3` lists one document per group-version (`api/v1`, `apis/apps/v1`, ...) with a
`serverRelativeURL` carrying the document's hash (upper-case hex SHA-512, as upstream). Each
document has:
- `paths` for every resource: the collection path (get with the operation-level
  `x-kubernetes-group-version-kind`, post) and the item path (get, put, patch, delete). Every
  write operation lists the `fieldValidation` query parameter inline: that is how kubectl
  decides to send `fieldValidation=Strict` and leave validation to the server;
- `components.schemas`: the kinds' schemas and everything they reference, with
  `x-kubernetes-group-version-kind` as a list (what `kubectl explain` matches on), refs as
  `#/components/schemas/<name>`, and JSON-schema type lists (`["string", "null"]`) turned
  into OpenAPI's single type.

`GET /openapi/v2` is the same content as one Swagger 2.0 document (refs `#/definitions/...`),
as JSON or, for client-go's protobuf Accept, as gnostic protobuf (`openapi_protobuf`; built-in
kinds only).
Custom resources appear under their group-versions with their CRD's schema (named
`com.example.v1.Widget`, as upstream), so `kubectl explain` works for them too.
Documents are built on first request and cached as bytes, keyed on the registry's generation
so a new CRD shows at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from k8py import KUBERNETES_VERSION
from k8py.api import schemas
from k8py.api.jsondoc import clone
from k8py.api.resources import Registry, Resource
from k8py.server.apiserver import openapi_protobuf

_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation")


def _convert(value: Any, ref_prefix: str) -> Any:
    """A schema from the data package in OpenAPI form."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                out[key] = ref_prefix + item.rsplit("/", 1)[-1]
            elif key == "type" and isinstance(item, list):
                types = [t for t in item if t != "null"]
                if len(types) == 1:
                    out[key] = types[0]
            else:
                out[key] = _convert(item, ref_prefix)
        return out
    if isinstance(value, list):
        return [_convert(v, ref_prefix) for v in value]
    return value


def _references(name: str, seen: set[str]) -> None:
    if name in seen:
        return
    seen.add(name)
    stack = [schemas.definitions()[name]]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                target = ref.rsplit("/", 1)[-1]
                if target not in seen and target in schemas.definitions():
                    seen.add(target)
                    stack.append(schemas.definitions()[target])
            stack.extend(v for k, v in node.items() if k != "$ref")
        elif isinstance(node, list):
            stack.extend(node)


OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _schema_name(resource: Resource) -> str | None:
    if resource.custom:  # upstream names CRD schemas by reversed group: com.example.v1.Widget
        return ".".join([*reversed(resource.group.split(".")), resource.version, resource.kind])
    return schemas.kind_definition(resource.group, resource.version, resource.kind)


def _custom_schema(resource: Resource, ref_prefix: str) -> dict[str, Any]:
    """A custom resource's schema as upstream publishes it: the CRD's openAPIV3Schema with
    the standard apiVersion, kind and metadata, and its group-version-kind."""
    schema = clone(resource.schema or {})
    schema.setdefault("type", "object")
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string", "description": "APIVersion defines "
                                         "the versioned schema of this representation of an "
                                         "object."})
    properties.setdefault("kind", {"type": "string", "description": "Kind is a string value "
                                   "representing the REST resource this object represents."})
    properties["metadata"] = {"$ref": ref_prefix + OBJECT_META}
    schema["x-kubernetes-group-version-kind"] = [
        {"group": resource.group, "kind": resource.kind, "version": resource.version}]
    return schema


def _parameters(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
            for n in names]


def _paths(resources: list[Resource], ref_prefix: str, v3: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in resources:
        name = _schema_name(r)
        gvk = {"group": r.group, "kind": r.kind, "version": r.version}
        root = f"/apis/{r.group}/{r.version}" if r.group else "/api/v1"
        collection = (f"{root}/namespaces/{{namespace}}/{r.plural}" if r.namespaced
                      else f"{root}/{r.plural}")
        body = {"$ref": ref_prefix + name} if name else {"type": "object"}

        def op(verb: str, params: tuple[str, ...] = ()) -> dict[str, Any]:
            operation: dict[str, Any] = {
                "operationId": f"{verb}{r.kind}",
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": _parameters(params) if v3 else [
                    {"name": p, "in": "query", "type": "string", "uniqueItems": True}
                    for p in params],
                "responses": {"200": {"description": "OK"}},
            }
            if verb in ("post", "put", "patch"):
                if v3:
                    operation["requestBody"] = {"content": {"*/*": {"schema": body}},
                                                "required": True}
                else:
                    operation["parameters"].append(
                        {"name": "body", "in": "body", "required": True, "schema": body})
            return operation

        paths[collection] = {
            "get": op("list"),
            "post": op("post", _QUERY_PARAMS),
        }
        paths[collection + "/{name}"] = {
            "get": op("get"),
            "put": op("put", _QUERY_PARAMS),
            "patch": op("patch", _QUERY_PARAMS + ("force",)),
            "delete": op("delete", ("dryRun",)),
        }
    return paths


def _components(resources: list[Resource], ref_prefix: str) -> dict[str, Any]:
    names: set[str] = set()
    custom = {}
    for r in resources:
        name = _schema_name(r)
        if r.custom:
            custom[name] = _custom_schema(r, ref_prefix)
            _references(OBJECT_META, names)
        elif name:
            _references(name, names)
    components = {n: _convert(schemas.definitions()[n], ref_prefix) for n in sorted(names)}
    components.update(custom)
    return components


def _info() -> dict[str, str]:
    return {"title": "Kubernetes", "version": KUBERNETES_VERSION}


def _v3_document(registry: Registry, group: str, version: str) -> bytes:
    return _v3_cached(registry, group, version, registry.generation)


@functools.lru_cache(maxsize=64)
def _v3_cached(registry: Registry, group: str, version: str, generation: int) -> bytes:
    resources = registry.in_group_version(group, version)
    prefix = "#/components/schemas/"
    doc = {
        "openapi": "3.0.0",
        "info": _info(),
        "paths": _paths(resources, prefix, v3=True),
        "components": {"schemas": _components(resources, prefix)},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def group_version_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def v3_root(registry: Registry) -> dict[str, Any]:
    paths = {}
    for group, versions in registry.groups().items():
        for version in versions:
            key = group_version_path(group, version)
            digest = hashlib.sha512(_v3_document(registry, group, version)).hexdigest().upper()
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}


def v3_document(registry: Registry, path: str) -> bytes | None:
    """The document for `api/v1` or `apis/<group>/<version>`, or None."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[:1] == ["apis"] and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        return None
    if not registry.has_group_version(group, version):
        return None
    return _v3_document(registry, group, version)


V2_JSON = "application/json"


def v2_media_type(accept: str) -> str | None:
    """The media type answering an Accept header on `/openapi/v2`: JSON, gnostic protobuf,
    or None when the header allows neither (a 406). Preference follows q, then order."""
    offers = []
    for position, part in enumerate(accept.split(",")):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media and q > 0:
            offers.append((-q, position, media.lower()))
    if not offers:
        return V2_JSON
    for _, _, media in sorted(offers):
        if media in openapi_protobuf.MEDIA_TYPES:
            return openapi_protobuf.CONTENT_TYPE
        if media in (V2_JSON, "application/*", "*/*"):
            return V2_JSON
    return None


def v2_document(registry: Registry, protobuf: bool = False) -> bytes:
    """The Swagger 2.0 document as JSON, or as gnostic protobuf (`openapi_protobuf`)."""
    return _v2_cached(registry, registry.generation, protobuf)


@functools.lru_cache(maxsize=4)
def _v2_cached(registry: Registry, generation: int, protobuf: bool) -> bytes:
    resources = [r for g, vs in registry.groups().items() for v in vs
                 for r in registry.in_group_version(g, v)]
    if protobuf:
        # Only kubectl reads this form, to validate on the client. A CRD's schema may hold
        # what its v2 model reads too strictly (properties beside
        # x-kubernetes-preserve-unknown-fields) or cannot parse, and one bad definition
        # spoils the whole document: custom kinds are left to the server's validation.
        resources = [r for r in resources if not r.custom]
    prefix = "#/definitions/"
    doc = {
        "swagger": "2.0",
        "info": _info(),
        "paths": _paths(resources, prefix, v3=False),
        "definitions": _components(resources, prefix),
    }
    if protobuf:
        return openapi_protobuf.document(doc)
    return json.dumps(doc, separators=(",", ":")).encode()
