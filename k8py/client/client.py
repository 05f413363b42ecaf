"""The async Kubernetes client every component uses: typed verbs over a `Transport`.

A transport carries one call to the API server and back, and a watch as batches of events.
Two exist: `k8py.client.http.HttpTransport` (HTTPS with a kubeconfig's credentials, for agents,
simulated nodes and tools) and the server's in-process transport
(`k8py.server.apiserver.inprocess`), which hands decoded documents to the REST handler
directly: no socket, no HTTP, no JSON, and still every check the API server makes.

Both raise `k8py.api.errors.StatusError` subclasses (NotFound, Conflict, Expired, ...), so a
controller's error handling does not depend on where it runs. A transport that cannot reach
the server raises `ServiceUnavailable`.

Objects are plain JSON dicts. What a call returns is the caller's to change; objects a watch
delivers may be shared (with other watchers and caches) and must be copied before changing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from k8py.api.resources import Resource

Event = tuple[str, dict[str, Any]]  # ("ADDED" | "MODIFIED" | "DELETED", object)

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}


@dataclasses.dataclass(frozen=True)
class Ref:
    """What a call addresses: a resource, and optionally a namespace, name and subresource."""
    resource: Resource
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


class Transport(Protocol):
    async def call(self, method: str, ref: Ref, *, query: Mapping[str, str] | None = None,
                   body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        """One request; the decoded response body."""

    def watch(self, ref: Ref, query: Mapping[str, str]) -> AsyncIterator[list[Event]]:
        """Batches of events after `query["resourceVersion"]`; ends when the server ends it.
        A compacted start raises `Expired`."""

    async def close(self) -> None:
        """Release connections."""


class Client:
    def __init__(self, transport: Transport, field_manager: str = "k8py"):
        self.transport = transport
        self.field_manager = field_manager

    async def close(self) -> None:
        await self.transport.close()

    @staticmethod
    def _namespace_of(resource: Resource, obj: dict, namespace: str | None) -> str | None:
        if not resource.namespaced:
            return None
        return namespace or obj.get("metadata", {}).get("namespace") or "default"

    async def get(self, resource: Resource, name: str, namespace: str | None = None,
                  ) -> dict[str, Any]:
        return await self.transport.call("GET", Ref(resource, namespace, name))

    async def list(self, resource: Resource, namespace: str | None = None, *,
                   label_selector: str = "", field_selector: str = "", limit: int = 0,
                   continue_token: str = "") -> dict[str, Any]:
        query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        if limit:
            query["limit"] = str(limit)
        if continue_token:
            query["continue"] = continue_token
        return await self.transport.call("GET", Ref(resource, namespace), query=query)

    async def create(self, resource: Resource, obj: dict[str, Any],
                     namespace: str | None = None) -> dict[str, Any]:
        ref = Ref(resource, self._namespace_of(resource, obj, namespace))
        return await self.transport.call("POST", ref, query=self._manager(), body=obj)

    async def update(self, resource: Resource, obj: dict[str, Any],
                     subresource: str | None = None) -> dict[str, Any]:
        """PUT; with the object's resourceVersion it fails with Conflict if that is stale."""
        ref = Ref(resource, self._namespace_of(resource, obj, None), obj["metadata"]["name"],
                  subresource)
        return await self.transport.call("PUT", ref, query=self._manager(), body=obj)

    async def update_status(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.update(resource, obj, "status")

    async def patch(self, resource: Resource, name: str, patch: Any,
                    namespace: str | None = None, *, patch_type: str = "merge",
                    subresource: str | None = None, force: bool = False) -> dict[str, Any]:
        query = self._manager()
        if force:
            query["force"] = "true"
        return await self.transport.call("PATCH", Ref(resource, namespace, name, subresource),
                                         query=query, body=patch,
                                         content_type=PATCH_TYPES[patch_type])

    async def delete(self, resource: Resource, name: str, namespace: str | None = None, *,
                     propagation: str | None = None, preconditions: dict | None = None,
                     grace_period: int | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            options["propagationPolicy"] = propagation
        if preconditions:
            options["preconditions"] = preconditions
        if grace_period is not None:
            options["gracePeriodSeconds"] = grace_period
        return await self.transport.call("DELETE", Ref(resource, namespace, name), body=options)

    async def create_subresource(self, resource: Resource, name: str, namespace: str | None,
                                 subresource: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to a subresource: pods/binding, pods/eviction."""
        return await self.transport.call("POST", Ref(resource, namespace, name, subresource),
                                         body=body)

    def watch(self, resource: Resource, namespace: str | None = None, *,
              resource_version: str, label_selector: str = "", field_selector: str = "",
              timeout_seconds: int | None = None) -> AsyncIterator[list[Event]]:
        query = {"watch": "true", "resourceVersion": resource_version,
                 "allowWatchBookmarks": "true"}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        if timeout_seconds is not None:
            query["timeoutSeconds"] = str(timeout_seconds)
        return self.transport.watch(Ref(resource, namespace), query)

    def _manager(self) -> dict[str, str]:
        return {"fieldManager": self.field_manager}
