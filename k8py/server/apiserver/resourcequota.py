"""The ResourceQuota admission plugin: a write that would take a namespace past one of its
ResourceQuotas is refused, and one that fits is charged to the quotas' `status.used` before
it is stored (upstream's apiserver/pkg/admission/plugin/resourcequota).

Which writes: creates of any namespaced resource, and the updates its evaluator says change
usage (Services and PersistentVolumeClaims; pods only through pods/resize), never other
subresources, events, or Namespaces (`k8py.api.quota`).

The decision (upstream's CheckRequest), per quota whose `status.hard` names something the
evaluator counts and whose scopes take the object in:
- `failed quota: <name>: must specify limits.cpu for: c` when a cpu/memory quota meets a
  container that does not state it;
- `status unknown for quota: <name>, resources: <names>` when the quota's usage has not
  been computed for a name it limits (a quota without `status.hard` yet is not applied);
- the object's usage (on update, what it adds over the old object's, never negative) masked
  to the quota's names; above `status.hard` is `exceeded quota: <name>, requested: pods=1,
  used: pods=2, limited: pods=2`. All refusals are 403, worded by `admission.forbidden`.

Charging: the new `status.used` of every quota that changed is written with the store's
compare-and-swap against the version the decision read. Decisions in one namespace are taken
one at a time (upstream queues them per namespace), so parallel creates cannot both pass a
limit of 1 here; the compare-and-swap keeps that true against the quota controller and other
API servers sharing the store. A lost swap decides again on fresh quotas, three times at
most, then the write fails with a 409. A dry run is decided but not charged. A charge whose
object then fails to store is given back by the controller's next full recount, as upstream.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from k8py.api import errors, quota, resourcelists
from k8py.api.resources import builtin
from k8py.server.apiserver.admission import CREATE, UPDATE, Attributes, forbidden

QUOTAS = builtin("v1", "resourcequotas")
RETRIES = 3

Obj = dict[str, Any]


def _status(item: Obj, field: str) -> resourcelists.ResourceList:
    return resourcelists.read((item.get("status") or {}).get(field))


def check_request(quotas: list[Obj], attributes: Attributes, evaluator: quota.Evaluator,
                  now: float | None = None) -> list[Obj]:
    """The quotas as they would be with the write charged (the same list when nothing is);
    raises Forbidden when the write does not fit."""
    obj = attributes.object or {}
    interesting = []
    for index, item in enumerate(quotas):
        if not evaluator.matches(item, obj):
            continue
        name = item["metadata"]["name"]
        hard = _status(item, "hard")
        restricted = evaluator.matching_resources(hard)
        problem = evaluator.constraints(restricted, obj)
        if problem:
            raise forbidden(attributes, f"failed quota: {name}: {problem}")
        used = (item.get("status") or {}).get("used") or {}
        if any(resource not in used for resource in restricted):
            raise forbidden(attributes, f"status unknown for quota: {name}, resources: "
                                        f"{','.join(sorted(restricted))}")
        interesting.append(index)
    if not interesting:
        return quotas
    usage = evaluator.usage(obj, now)
    negative = resourcelists.negative(usage)
    if negative:
        raise forbidden(attributes, "quota usage is negative for resource(s): "
                                    f"{','.join(sorted(negative))}")
    deltas = {index: usage for index in interesting}
    if attributes.operation == UPDATE:
        old = attributes.old_object
        if old is None:
            raise forbidden(attributes, "unable to get previous usage since prior version of "
                                        "object was not found")
        if (old.get("metadata") or {}).get("resourceVersion"):
            delta = resourcelists.subtract_non_negative(usage, evaluator.usage(old, now))
            for index in interesting:
                if evaluator.matches(quotas[index], old):
                    deltas[index] = delta
    deltas = {i: d for i, d in ((i, resourcelists.remove_zeros(d)) for i, d in deltas.items())
              if d}
    if not deltas:
        return quotas
    charged = list(quotas)
    for index, delta in deltas.items():
        item = quotas[index]
        hard, used = _status(item, "hard"), _status(item, "used")
        requested = resourcelists.mask(delta, hard)
        new_used = resourcelists.add(used, requested)
        fits, exceeded = resourcelists.less_than_or_equal(
            resourcelists.mask(new_used, requested), hard)
        if not fits:
            raise forbidden(attributes, (
                f"exceeded quota: {item['metadata']['name']}, "
                f"requested: {resourcelists.pretty(resourcelists.mask(requested, exceeded))}, "
                f"used: {resourcelists.pretty(resourcelists.mask(used, exceeded))}, "
                f"limited: {resourcelists.pretty(resourcelists.mask(hard, exceeded))}"))
        status = {**(item.get("status") or {}), "used": resourcelists.written(new_used)}
        charged[index] = {**item, "status": status}
    return charged


class ResourceQuota:
    name = "ResourceQuota"

    def __init__(self, objects):
        self.objects = objects  # storage.ObjectStore
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}

    async def admit(self, attributes: Attributes) -> Obj | None:
        return None

    async def _quotas(self, namespace: str) -> list[Obj]:
        items, _, _ = await self.objects.list(QUOTAS, namespace)
        return items

    async def validate(self, attributes: Attributes) -> None:
        if attributes.subresource and attributes.subresource != "resize":
            return
        namespace, resource = attributes.namespace, attributes.resource
        if attributes.operation not in (CREATE, UPDATE) or not namespace or \
                (resource.group, resource.plural) == ("", "namespaces") or \
                not isinstance(attributes.object, dict):
            return
        evaluator = quota.evaluator_for(resource.group, resource.plural)
        if evaluator is None or not evaluator.handles(attributes.operation,
                                                      attributes.subresource):
            return
        if not await self._quotas(namespace):
            return
        # one decision at a time per namespace; the lock goes with its last waiter
        lock = self._locks.setdefault(namespace, asyncio.Lock())
        self._waiting[namespace] = self._waiting.get(namespace, 0) + 1
        try:
            async with lock:
                await self._decide(attributes, evaluator, namespace)
        finally:
            self._waiting[namespace] -= 1
            if not self._waiting[namespace]:
                del self._waiting[namespace], self._locks[namespace]

    async def _decide(self, attributes: Attributes, evaluator: quota.Evaluator,
                      namespace: str) -> None:
        quotas = await self._quotas(namespace)
        for attempt in range(RETRIES + 1):
            charged = check_request(quotas, attributes, evaluator, time.time())
            if attributes.dry_run:
                return
            lost: list[str] = []
            last: errors.StatusError | None = None
            for before, after in zip(quotas, charged):
                if after is before:
                    continue
                try:
                    await self.objects.update(QUOTAS, after,
                                              int(before["metadata"]["resourceVersion"]))
                except (errors.Conflict, errors.NotFound) as exc:
                    lost.append(before["metadata"]["name"])
                    last = exc
            if not lost:
                return
            if attempt == RETRIES:
                # a plain 409: the write path must not take it for its own lost race
                raise errors.Conflict(last.message if last else "quota update failed")
            # decide again, on fresh copies of the quotas whose charge was lost only (the
            # others hold this write's charge already); a deleted quota drops out
            quotas = [q for q in await self._quotas(namespace)
                      if q["metadata"]["name"] in lost]
