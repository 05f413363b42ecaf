"""The in-process transport: the server's own components (scheduler, controllers, embedded
agent) call the REST handler directly, with decoded documents.

A call builds a `Request` that looks to the REST handler like an HTTP request whose body was
already decoded (`parsed_body`), and runs the same code an HTTP request runs: defaulting,
validation, admission, managedFields, the store. Skipped are only the socket, HTTP parsing,
JSON encoding and decoding, and authentication (the caller is the server itself, and acts as
`system:k8py-controller-manager`). Bodies are copied on the way in, so a caller may pass an
object it took from a cache.

A watch follows the same rules as an HTTP watch (`watchserving.start`, `initial`,
`transitions`) and reads the store's watch stream through `ObjectStore.watch`, whose decoded
events are shared with every other watcher, HTTP or in process: a cache fed by it holds the
same dicts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from multidict import CIMultiDict, MultiDict

from k8py.api.jsondoc import clone
from k8py.client.client import Event, Ref
from k8py.server.apiserver.authn import USER_KEY, User
from k8py.server.apiserver.rest import RestHandler, Target
from k8py.server.apiserver import queryparams, watchserving
from k8py.server.apiserver.storage import decode_bytes, parse_resource_version

IDENTITY = User("system:k8py-controller-manager", ("system:masters",))


class Request(dict):
    """What the REST handler reads of a request, with the body already decoded."""

    def __init__(self, method: str, query: Mapping[str, str] | None, body: Any,
                 content_type: str, user_agent: str):
        super().__init__()
        self.method = method
        self.query = MultiDict(query or {})
        self.headers = CIMultiDict({"Content-Type": content_type, "User-Agent": user_agent})
        self.parsed_body = clone(body) if body is not None else None
        self.body_exists = body is not None
        self[USER_KEY] = IDENTITY


class InProcessTransport:
    def __init__(self, handler: RestHandler, user_agent: str = "k8py-controller-manager"):
        self.handler = handler
        self.user_agent = user_agent

    async def call(self, method: str, ref: Ref, *, query: Mapping[str, str] | None = None,
                   body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        request = Request(method, query, body, content_type, self.user_agent)
        result, _ = await self.handler.call(
            request, Target(ref.resource, ref.namespace, ref.name, ref.subresource))
        return result

    async def watch(self, ref: Ref, query: Mapping[str, str]) -> AsyncIterator[list[Event]]:
        """Changes after `resourceVersion`, with the selectors' ADDED/DELETED transitions as
        an HTTP watch has them."""
        matches = queryparams.matcher(query)
        snapshot, watch = await watchserving.start(
            self.handler.objects, ref.resource, ref.namespace,
            parse_resource_version(query.get("resourceVersion")))
        try:
            if snapshot is not None:
                added = [("ADDED", obj if obj is not None else decode_bytes(item))
                         for item, obj in watchserving.initial(snapshot.items, matches)]
                snapshot = None  # shared with other watches: let it go
                if added:
                    yield added
            while True:
                batch = [(event_type, event.object) for event_type, event
                         in watchserving.transitions(await watch.next(), matches)]
                if batch:
                    yield batch
        finally:
            watch.close()

    async def close(self) -> None:
        pass
