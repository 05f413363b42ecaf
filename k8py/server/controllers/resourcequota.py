"""The resource quota controller (upstream's `resourcequota` in kube-controller-manager):
keeps each ResourceQuota's `status.hard` equal to its `spec.hard` and `status.used` equal to
what the namespace's objects use (`k8py.api.quota.calculate_usage`).

Admission charges usage as objects are written (`apiserver.resourcequota`), so this
controller is what gives usage back, and what computes it first:
- a new quota, or one whose spec.hard changed, is counted at once;
- a deletion of anything a quota in its namespace counts, and an update that releases usage
  (a pod that finished, a Service no longer NodePort/LoadBalancer), recounts those quotas
  (upstream's replenishment);
- every quota is recounted every `resync_period` (upstream's 5 minutes), which also gives
  back charges for writes that failed after admission.
Creations do not trigger a recount: admission has charged them, and a count from caches
that have not seen them yet would give their charge back too early.

Counting reads the shared informer caches only (one per counted resource, taken when a
quota first names it: every built-in kind the garbage collector watches anyway, custom
resources found through their CRD); a cache that has not synced yet leaves its names as
they were and the quota is looked at again a second later. The status is written with
PUT resourcequotas/status against the cached version (a 409 retries): list, watch and that
update are all upstream's `system:controller:resourcequota` role allows.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from k8py.api import quota, resourcelists
from k8py.api.resources import BUILTIN, Resource, builtin, from_crd
from k8py.client.informer import Informer, split_key
from k8py.server.controllers.base import Controller

log = logging.getLogger(__name__)

QUOTAS = builtin("v1", "resourcequotas")
CRDS = builtin("apiextensions.k8s.io/v1", "customresourcedefinitions")
# one version per resource: the one it is stored in, listable and watchable
_BUILTIN = {(r.group, r.plural): r for r in BUILTIN
            if not r.converts and {"list", "watch"} <= set(r.verbs)}
NOT_SYNCED_RETRY = 1.0

Obj = dict[str, Any]


class ResourceQuotaController(Controller):
    name = "resourcequota"
    service_account = "resourcequota-controller"
    component = "resourcequota-controller"
    workers = 2
    resync_period = 300.0  # seconds between full recounts

    def setup(self) -> None:
        self.quotas = self.informer(QUOTAS)
        self.quotas.add_handlers(self._quota_added, self._quota_updated)
        self.crds = self.informer(CRDS)
        self.counted: dict[tuple[str, str], Informer] = {}
        for evaluator in quota.evaluators_for(()):
            self._count(evaluator.group, evaluator.plural)

    # --- what to watch ----------------------------------------------------------------------

    def _resource(self, group: str, plural: str) -> Resource | None:
        resource = _BUILTIN.get((group, plural))
        if resource is not None or not group:
            return resource
        for crd in self.crds.list():
            spec = crd.get("spec") or {}
            if spec.get("group") == group and (spec.get("names") or {}).get("plural") == plural:
                served = from_crd(crd)
                return served[0] if served else None
        return None

    def _count(self, group: str, plural: str) -> Informer | None:
        """The cache of a counted resource, its handlers registered on first use."""
        informer = self.counted.get((group, plural))
        if informer is not None:
            return informer
        resource = self._resource(group, plural)
        evaluator = quota.evaluator_for(group, plural)
        if resource is None or evaluator is None:
            return None
        informer = self.counted[(group, plural)] = self.informer(resource)
        informer.add_handlers(
            None,
            lambda old, new: self._changed(evaluator, new) if evaluator.releases(old, new)
            else None,
            lambda obj: self._changed(evaluator, obj))
        return informer

    # --- what to look at --------------------------------------------------------------------

    def _quota_added(self, item: Obj) -> None:
        for name in (item.get("spec") or {}).get("hard") or {}:
            resource = quota.counted_resource(name)
            if resource is not None:
                self._count(*resource)
        self.enqueue_object(item)

    def _quota_updated(self, old: Obj, new: Obj) -> None:
        # status writes (admission's charges, this controller's) are not looked at
        if (old.get("spec") or {}).get("hard") != (new.get("spec") or {}).get("hard"):
            self._quota_added(new)

    def _changed(self, evaluator: quota.Evaluator, obj: Obj) -> None:
        """Recount the quotas of obj's namespace that limit what it used."""
        namespace = (obj.get("metadata") or {}).get("namespace")
        if not namespace:
            return
        for item in self.quotas.list(namespace):
            if evaluator.matching_resources((item.get("status") or {}).get("hard") or {}):
                self.enqueue_object(item)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_period)
            for key in self.quotas.keys():
                self.enqueue(key)

    async def run(self) -> None:
        resync = asyncio.create_task(self._resync())
        try:
            await super().run()
        finally:
            resync.cancel()
            await asyncio.gather(resync, return_exceptions=True)

    # --- counting ---------------------------------------------------------------------------

    def _list(self, group: str, plural: str, namespace: str) -> list[Obj] | None:
        informer = self._count(group, plural)
        if informer is None or not informer.synced.is_set():
            return None
        return informer.list(namespace)

    async def reconcile(self, key: str) -> float | None:
        item = self.quotas.get(key)
        if item is None:
            return None
        namespace, _ = split_key(key)
        status = item.get("status") or {}
        hard = resourcelists.read((item.get("spec") or {}).get("hard"))
        usage, measured = quota.calculate_usage(item, namespace or "", self._list)
        used = resourcelists.read(status.get("used"))
        used.update(usage)
        used = resourcelists.mask(used, hard)
        dirty = status.get("hard") is None or status.get("used") is None or \
            not resourcelists.equals(resourcelists.read(status.get("hard")), hard) or \
            not resourcelists.equals(resourcelists.read(status.get("used")), used)
        if dirty:
            await self.client.update_status(QUOTAS, {
                **item, "status": {"hard": resourcelists.written(hard),
                                   "used": resourcelists.written(used)}})
        for name in hard:
            resource = quota.counted_resource(name) if name not in measured else None
            informer = self._count(*resource) if resource is not None else None
            if informer is not None and not informer.synced.is_set():
                log.debug("quota %s: %s not counted yet", key, name)
                return NOT_SYNCED_RETRY
        return None
