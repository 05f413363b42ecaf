"""Serving a watch: newline-delimited JSON events on a chunked 200 response.

- `resourceVersion` unset or "0": first an ADDED event for every existing object (upstream's
  "get state and start at most recent"), then changes. `resourceVersion=N`: changes after N.
- With a label or field selector, an object that stops matching is sent as DELETED and one
  that starts matching as ADDED, as upstream does.
- A resourceVersion that is compacted, or a watcher that falls behind, gets one ERROR event
  carrying a 410 `Expired` Status, then the stream ends; the client relists.
- `allowWatchBookmarks=true`: a BOOKMARK (an object of the watched kind holding only
  `metadata.resourceVersion`) after each idle minute, so a client can resume cheaply.
- With a Table Accept header (`kubectl get -w`), each object is sent as a one-row Table;
  the column definitions ride with the first.
- `timeoutSeconds` ends the stream (default 30 minutes, as upstream's minimum request
  timeout), after which clients re-watch from the last version they saw.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from k8py.api import errors, tables
from k8py.api.resources import Resource
from k8py.server.apiserver import queryparams
from k8py.server.apiserver.storage import ObjectStore, parse_resource_version

DEFAULT_TIMEOUT = 1800.0
BOOKMARK_INTERVAL = 60.0


def _line(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


class _TableEvents:
    """Turns watched objects into one-row Tables; column definitions go with the first."""

    def __init__(self, resource: Resource, include: str):
        self.resource, self.include, self.sent_columns = resource, include, False

    def __call__(self, obj: dict[str, Any]) -> dict[str, Any]:
        body = tables.table(self.resource.group, self.resource.plural, [obj],
                            include_object=self.include,
                            list_metadata={"resourceVersion": obj["metadata"]["resourceVersion"]},
                            with_columns=not self.sent_columns)
        self.sent_columns = True
        return body


async def serve_watch(request: web.Request, objects: ObjectStore, resource: Resource,
                      namespace: str | None, matches, as_table: bool = False
                      ) -> web.StreamResponse:
    query = request.query
    rv_text = query.get("resourceVersion", "")
    revision = parse_resource_version(rv_text)
    timeout = queryparams.int64(query, "timeoutSeconds", 0) or DEFAULT_TIMEOUT
    bookmarks = queryparams.boolean(query, "allowWatchBookmarks")
    selective = matches is not None
    if matches is None:
        def matches(obj: dict[str, Any]) -> bool:
            return True

    initial: list[dict[str, Any]] = []
    if revision == 0:
        initial, list_revision, _ = await objects.list(resource, namespace, matches=matches)
        start = list_revision + 1
    else:
        start = revision + 1
    render = _TableEvents(resource, query.get("includeObject", "Metadata")) if as_table \
        else (lambda obj: obj)
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    try:
        watch = objects.watch(resource, namespace, start)
    except errors.Expired as exc:
        await response.prepare(request)
        await response.write(_line("ERROR", exc.status()))
        return response
    await response.prepare(request)
    deadline = time.monotonic() + max(timeout, 0)
    try:
        for obj in initial:
            await response.write(_line("ADDED", render(obj)))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                events = await asyncio.wait_for(watch.next(), min(remaining, BOOKMARK_INTERVAL))
            except asyncio.TimeoutError:
                if bookmarks and time.monotonic() < deadline:
                    marker = {"kind": resource.kind, "apiVersion": resource.api_version,
                              "metadata": {"resourceVersion": str(objects.backend.revision)}}
                    await response.write(_line("BOOKMARK", marker))
                continue
            except errors.Expired as exc:
                await response.write(_line("ERROR", exc.status()))
                break
            chunk = bytearray()
            for event in events:
                event_type, obj = event.type, event.object
                now_matches = matches(obj)
                if event_type == "MODIFIED" and selective and now_matches != matches(
                        event.previous):
                    event_type = "ADDED" if now_matches else "DELETED"
                elif not now_matches:
                    continue
                if event_type == event.type and not as_table:
                    chunk += event.line()  # serialized once for all watchers
                else:
                    chunk += _line(event_type, render(obj))
            if chunk:
                await response.write(bytes(chunk))
    except ConnectionResetError:
        pass  # the client went away
    finally:
        watch.close()
    return response
