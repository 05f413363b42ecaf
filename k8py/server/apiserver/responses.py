"""JSON answers as kube-apiserver writes them (`k8py.api.encoding`: Go's field order,
compact, one newline at the end). Every JSON body the API server sends is made here or is
stored bytes that `storage` wrote the same way; `kubectl get`'s Tables too."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from k8py.api import encoding, errors, tables
from k8py.api.resources import Resource

JSON = "application/json"
TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def json_response(body: Any, *, status: int = 200, content_type: str = JSON,
                  headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(body=encoding.dumps(body), status=status, headers=headers)
    if "Content-Type" not in (headers or {}):
        response.content_type = content_type
    return response


def wants_table(request: web.Request) -> bool:
    """Whether the Accept header asks for a meta.k8s.io Table (as `kubectl get` does)."""
    for part in request.headers.get("Accept", "").split(","):
        params = {p.strip() for p in part.split(";")}
        if "as=Table" in params and "g=meta.k8s.io" in params and (
            "v=v1" in params or "v=v1beta1" in params
        ):
            return True
    return False


def table_response(request: web.Request, resource: Resource, objects: list[dict],
                   list_metadata: dict | None = None) -> web.Response:
    """objects as a Table with the kind's columns (`k8py.api.tables`)."""
    include = request.query.get("includeObject", "Metadata")
    if include not in ("None", "Metadata", "Object"):
        raise errors.BadRequest(f"invalid includeObject: {include!r}")
    body = tables.table(resource.group, resource.plural, objects, include_object=include,
                        list_metadata=list_metadata)
    return json_response(body, headers={"Content-Type": TABLE_CONTENT_TYPE})
