"""JSON answers as kube-apiserver writes them (`k8py.api.encoding`: Go's field order,
compact, one newline at the end). Every JSON body the API server sends is made here or is
stored bytes that `storage` wrote the same way."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from k8py.api import encoding

JSON = "application/json"


def json_response(body: Any, *, status: int = 200, content_type: str = JSON,
                  headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(body=encoding.dumps(body), status=status, headers=headers)
    if "Content-Type" not in (headers or {}):
        response.content_type = content_type
    return response
