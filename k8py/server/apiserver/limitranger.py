"""The LimitRanger admission plugin: a namespace's LimitRanges default and bound what its pods
and PersistentVolumeClaims ask for (upstream's plugin/pkg/admission/limitranger).

- admit (mutating), pod creates: each LimitRange's Container defaults fill the requests and
  limits containers and init containers leave out, with the `kubernetes.io/limit-ranger`
  annotation saying what was set (`k8py.api.limitranges.apply_container_defaults`).
- validate, pod creates (and pods/resize) and claim creates and updates: the first
  LimitRange whose bounds the object breaks refuses it, 403 with every broken bound:
  `pods "x" is forbidden: [minimum cpu usage per Container is 100m, but request is 50m, ...]`.
Pod updates are not looked at (containers' resources are immutable but for resize), nor
objects being deleted. The LimitRanges are read from the store at each write, so a new one
applies to the very next pod (upstream reads an informer, with a live lookup when empty).
"""

from __future__ import annotations

from typing import Any

from k8py.api import limitranges
from k8py.api.resources import builtin
from k8py.server.apiserver.admission import CREATE, UPDATE, Attributes, forbidden

LIMIT_RANGES = builtin("v1", "limitranges")


def _namespace(attributes: Attributes) -> str:
    metadata = (attributes.object or {}).get("metadata")
    given = metadata.get("namespace") if isinstance(metadata, dict) else None
    return attributes.namespace or given or "default"


class LimitRanger:
    name = "LimitRanger"

    def __init__(self, objects):
        self.objects = objects  # storage.ObjectStore

    @staticmethod
    def _kind(attributes: Attributes) -> str | None:
        """"pods" or "persistentvolumeclaims" when this write is looked at, else None."""
        resource = attributes.resource
        if resource.group or not isinstance(attributes.object, dict):
            return None
        old = attributes.old_object
        if old is not None and (old.get("metadata") or {}).get("deletionTimestamp"):
            return None
        operation, subresource = attributes.operation, attributes.subresource
        if resource.plural == "pods":
            if subresource == "resize":
                return "pods" if operation == UPDATE else None
            return "pods" if operation == CREATE and not subresource else None
        if resource.plural == "persistentvolumeclaims" and not subresource and \
                operation in (CREATE, UPDATE):
            return "persistentvolumeclaims"
        return None

    async def _limit_ranges(self, namespace: str) -> list[dict[str, Any]]:
        items, _, _ = await self.objects.list(LIMIT_RANGES, namespace)
        return items

    async def admit(self, attributes: Attributes) -> dict[str, Any] | None:
        if self._kind(attributes) != "pods" or attributes.operation != CREATE:
            return None
        pod = attributes.object
        for limit_range in await self._limit_ranges(_namespace(attributes)):
            pod = limitranges.apply_container_defaults(pod, limit_range)
        return pod if pod is not attributes.object else None

    async def validate(self, attributes: Attributes) -> None:
        kind = self._kind(attributes)
        if kind is None:
            return
        check = limitranges.pod_violations if kind == "pods" else limitranges.claim_violations
        for limit_range in await self._limit_ranges(_namespace(attributes)):
            problems = check(limit_range, attributes.object)
            if problems:
                raise forbidden(attributes, limitranges.aggregate(problems))
