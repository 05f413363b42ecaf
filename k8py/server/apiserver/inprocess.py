"""The in-process transport: the server's own components (scheduler, controllers, embedded
agent) call the REST handler directly, with decoded documents.

A call builds a `Request` that looks to the REST handler like an HTTP request whose body was
already decoded (`parsed_body`), and runs the same code an HTTP request runs: defaulting,
validation, admission, managedFields, the store. Skipped are only the socket, HTTP parsing,
JSON encoding and decoding, and authentication: the caller is a component of the server and
says whom it acts as (`user`: the API server itself, the controller manager, a controller's
service account, the scheduler, the embedded agent's node), and is authorized as that user
(`RestHandler.authorization`) exactly as an HTTP request would be. Bodies are copied on the
way in, so a caller may pass an object it took from a cache.

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
from k8py.server.apiserver import authz, queryparams, requestinfo, watchserving
from k8py.server.apiserver.storage import decode_bytes, parse_resource_version

API_SERVER = authz.API_SERVER
# The server's components and whom they act as, as upstream's components authenticate:
CONTROLLER_MANAGER = User("system:kube-controller-manager")  # its informers and lease
SCHEDULER = User("system:kube-scheduler")


def controller(account: str) -> User:
    """A controller's service account in kube-system (upstream's
    --use-service-account-credentials), bound to `system:controller:<account>`."""
    return User(f"system:serviceaccount:kube-system:{account}",
                ("system:serviceaccounts", "system:serviceaccounts:kube-system"))


def node(name: str) -> User:
    """A kubelet: what its client certificate says (`system:node:<name>`, `system:nodes`)."""
    return User(f"system:node:{name}", ("system:nodes",))


class Request(dict):
    """What the REST handler reads of a request, with the body already decoded."""

    def __init__(self, method: str, query: Mapping[str, str] | None, body: Any,
                 content_type: str, user_agent: str, user: User = API_SERVER):
        super().__init__()
        self.method = method
        self.query = MultiDict(query or {})
        self.headers = CIMultiDict({"Content-Type": content_type, "User-Agent": user_agent})
        self.parsed_body = clone(body) if body is not None else None
        self.body_exists = body is not None
        self[USER_KEY] = user


def attributes(user: User, method: str, ref: Ref, query: Mapping[str, str] | None,
               watch: bool = False) -> authz.Attributes:
    """An in-process call as the authorizers see it (what `authz.request_attributes`
    makes of the same HTTP request)."""
    query = query or {}
    name = ref.name or ""
    if method == "GET":
        verb = "get" if name else ("watch" if watch else "list")
        if not name:
            name = requestinfo.selected_name(query.get("fieldSelector", ""))
    else:
        verb = requestinfo.VERBS.get(method, method.lower())
        if verb == "delete" and not name:
            verb = "deletecollection"
    resource = ref.resource
    return authz.Attributes(user, verb, True, resource.group, resource.version,
                            resource.plural, ref.subresource or "", ref.namespace or "", name)


class InProcessTransport:
    def __init__(self, handler: RestHandler, user_agent: str = "k8py-controller-manager",
                 user: User = API_SERVER):
        self.handler = handler
        self.user_agent = user_agent
        self.user = user

    async def _authorize(self, method: str, ref: Ref, query: Mapping[str, str] | None,
                         watch: bool = False) -> None:
        authorization = self.handler.authorization
        if authorization is not None:
            await authorization.check(attributes(self.user, method, ref, query, watch))

    async def call(self, method: str, ref: Ref, *, query: Mapping[str, str] | None = None,
                   body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        await self._authorize(method, ref, query)
        request = Request(method, query, body, content_type, self.user_agent, self.user)
        result, _ = await self.handler.call(
            request, Target(ref.resource, ref.namespace, ref.name, ref.subresource))
        return result

    async def watch(self, ref: Ref, query: Mapping[str, str]) -> AsyncIterator[list[Event]]:
        """Changes after `resourceVersion`, with the selectors' ADDED/DELETED transitions as
        an HTTP watch has them."""
        await self._authorize("GET", ref, query, watch=True)
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
