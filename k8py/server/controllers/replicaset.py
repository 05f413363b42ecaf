"""ReplicaSet and ReplicationController: keep `spec.replicas` pods of the template running.

Pods belong to their set through a controller ownerReference. Per reconcile:
- too few active pods: create the difference, in slow-start batches (1, 2, 4, ...) so that a
  failing template costs one error, not hundreds (upstream's slowStartBatch);
- too many: delete the surplus, the least useful first (unscheduled, then pending, then not
  ready, then the most recently started), as upstream ranks them;
- write status: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (ready for
  `minReadySeconds`), observedGeneration.
Expectations keep a reconcile from counting pods before the cache has seen the previous
round's creates and deletes. Orphaned pods that match the selector are adopted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from k8py.api import errors, selectors, timestamps
from k8py.api.resources import builtin
from k8py.client.informer import by_owner_uid, key_of
from k8py.server.controllers.base import (Controller, Expectations, controller_of,
                                          is_active_pod, is_pod_ready, owner_reference)

PODS = builtin("v1", "pods")
MAX_BATCH = 500


def pod_from_template(template: dict[str, Any], owner: dict[str, Any], *,
                      name: str | None = None, generate_name: str | None = None,
                      extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod for `owner` from its pod template (copied), owned by it."""
    template_meta = template.get("metadata") or {}
    metadata: dict[str, Any] = {
        "namespace": owner["metadata"]["namespace"],
        "labels": {**(template_meta.get("labels") or {}), **(extra_labels or {})},
        "ownerReferences": [owner_reference(owner)],
    }
    if template_meta.get("annotations"):
        metadata["annotations"] = dict(template_meta["annotations"])
    if template_meta.get("finalizers"):
        metadata["finalizers"] = list(template_meta["finalizers"])
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = generate_name or f"{owner['metadata']['name']}-"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": template.get("spec") or {}}


def available_since(pod: dict[str, Any], min_ready_seconds: int, now: float) -> float | None:
    """Seconds until a ready pod counts as available (0: it is); None if not ready."""
    if not is_pod_ready(pod):
        return None
    if min_ready_seconds <= 0:
        return 0.0
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            since = timestamps.parse(condition.get("lastTransitionTime"))
            if since is None:
                return 0.0
            return max(0.0, since + min_ready_seconds - now)
    return 0.0


def _deletion_rank(pod: dict[str, Any]) -> tuple:
    """Lower ranks are deleted first."""
    status = pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(status.get("phase", ""), 0)
    restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or ())
    return (
        bool((pod.get("spec") or {}).get("nodeName")),
        phase_rank,
        is_pod_ready(pod),
        -restarts,
        # newer first: negate the creation time
        -(timestamps.parse(pod["metadata"].get("creationTimestamp")) or 0.0),
    )


async def slow_start(count: int, create) -> tuple[int, errors.StatusError | None]:
    """Run `create()` count times in growing batches; stop at the first failing batch.
    (successes, first error)."""
    done, batch = 0, 1
    while done < count:
        size = min(batch, count - done, MAX_BATCH)
        results = await asyncio.gather(*(create() for _ in range(size)),
                                       return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        done += size - len(failures)
        if failures:
            error = failures[0]
            if not isinstance(error, errors.StatusError):
                raise error
            return done, error
        batch *= 2
    return done, None


class ReplicaSetController(Controller):
    name = "replicaset"
    service_account = "replicaset-controller"
    workers = 4
    resource = builtin("apps/v1", "replicasets")
    kind = "ReplicaSet"

    def setup(self) -> None:
        self.expectations = Expectations()
        self.sets = self.informer(self.resource)
        self.sets.add_handlers(self.enqueue_object, lambda old, new: self.enqueue_object(new),
                               self._set_deleted)
        self.pods = self.informer(PODS)
        self.pods.add_index("owner", by_owner_uid)
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)

    def selector(self, owner: dict[str, Any]) -> dict[str, Any]:
        return (owner.get("spec") or {}).get("selector") or {}

    def _set_deleted(self, obj: dict[str, Any]) -> None:
        self.expectations.forget(key_of(obj))

    def _pod_added(self, pod: dict[str, Any]) -> None:
        key = self.enqueue_owner(pod, self.kind)
        if key is not None:
            self.expectations.observed_add(key)
        elif not pod["metadata"].get("deletionTimestamp"):
            self._enqueue_selecting(pod)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = self.enqueue_owner(new, self.kind)
        if new["metadata"].get("deletionTimestamp") and not old["metadata"].get(
                "deletionTimestamp") and key is not None:
            self.expectations.observed_delete(key)
        old_owner = controller_of(old)
        if old_owner is not None and old_owner != controller_of(new):
            self.enqueue_owner(old, self.kind)
        if key is None and old["metadata"].get("labels") != new["metadata"].get("labels"):
            self._enqueue_selecting(new)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = self.enqueue_owner(pod, self.kind)
        if key is not None and not pod["metadata"].get("deletionTimestamp"):
            self.expectations.observed_delete(key)

    def _enqueue_selecting(self, pod: dict[str, Any]) -> None:
        """An orphan: queue the sets whose selector picks it, to adopt it."""
        labels = pod["metadata"].get("labels") or {}
        for owner in self.sets.list(pod["metadata"]["namespace"]):
            selector = self.selector(owner)
            if selector and selectors.selector_matches(selector, labels):
                self.enqueue_object(owner)

    async def _adopt(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        """Claim orphans the selector picks; the pods as adopted."""
        selector = self.selector(owner)
        adopted: list[dict[str, Any]] = []
        if not selector or owner["metadata"].get("deletionTimestamp"):
            return adopted
        for pod in self.pods.list(owner["metadata"]["namespace"]):
            if controller_of(pod) is None and is_active_pod(pod) and \
                    selectors.selector_matches(selector, pod["metadata"].get("labels") or {}):
                refs = list(pod["metadata"].get("ownerReferences") or []) + \
                    [owner_reference(owner)]
                try:
                    adopted.append(await self.client.patch(PODS, pod["metadata"]["name"], {
                        "metadata": {"ownerReferences": refs,
                                     "resourceVersion": pod["metadata"]["resourceVersion"]}},
                        pod["metadata"]["namespace"]))
                except (errors.NotFound, errors.Conflict):
                    continue
        return adopted

    def owned_pods(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in self.pods.by_index("owner", owner["metadata"]["uid"])
                if (controller_of(p) or {}).get("uid") == owner["metadata"]["uid"]]

    def new_pod(self, owner: dict[str, Any]) -> dict[str, Any]:
        return pod_from_template(owner["spec"].get("template") or {}, owner)

    async def reconcile(self, key: str) -> float | None:
        owner = self.sets.get(key)
        if owner is None:
            self.expectations.forget(key)
            return None
        pods = self.owned_pods(owner)
        active = [p for p in pods if is_active_pod(p)]
        if self.expectations.satisfied(key) and not owner["metadata"].get("deletionTimestamp"):
            active += await self._adopt(owner)
            await self._scale(key, owner, active)
        return await self._write_status(owner, pods, active)

    async def _scale(self, key: str, owner: dict[str, Any], active: list[dict]) -> None:
        wanted = owner["spec"].get("replicas", 1)
        namespace = owner["metadata"]["namespace"]
        diff = wanted - len(active)
        if diff > 0:
            count = min(diff, MAX_BATCH)
            self.expectations.expect(key, adds=count)
            template = self.new_pod(owner)

            async def create() -> None:
                pod = await self.client.create(PODS, template, namespace)
                await self.record(self.resource, owner, "Normal", "SuccessfulCreate",
                                  f"Created pod: {pod['metadata']['name']}")

            done, error = await slow_start(count, create)
            for _ in range(count - done):
                self.expectations.observed_add(key)
            if error is not None:
                await self.record(self.resource, owner, "Warning", "FailedCreate",
                                  f"Error creating: {error.message}")
                raise error
        elif diff < 0:
            surplus = sorted(active, key=_deletion_rank)[:min(-diff, MAX_BATCH)]
            self.expectations.expect(key, deletes=len(surplus))

            async def delete(pod: dict) -> None:
                try:
                    await self.client.delete(PODS, pod["metadata"]["name"], namespace)
                except errors.NotFound:
                    self.expectations.observed_delete(key)
                    return
                await self.record(self.resource, owner, "Normal", "SuccessfulDelete",
                                  f"Deleted pod: {pod['metadata']['name']}")

            await asyncio.gather(*(delete(p) for p in surplus))

    async def _write_status(self, owner: dict[str, Any], pods: list[dict],
                            active: list[dict]) -> float | None:
        spec = owner["spec"]
        min_ready = spec.get("minReadySeconds", 0)
        now = time.time()
        ready = available = 0
        recheck = None
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        labeled = 0
        for pod in active:
            labels = pod["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in template_labels.items()):
                labeled += 1
            wait = available_since(pod, min_ready, now)
            if wait is None:
                continue
            ready += 1
            if wait == 0:
                available += 1
            else:
                recheck = wait if recheck is None else min(recheck, wait)
        old = owner.get("status") or {}
        status = {"replicas": len(active), "fullyLabeledReplicas": labeled,
                  "readyReplicas": ready, "availableReplicas": available,
                  "observedGeneration": owner["metadata"].get("generation", 1)}
        if old.get("conditions"):
            status["conditions"] = old["conditions"]
        if any(old.get(k, 0) != v for k, v in status.items() if k != "conditions"):
            await self.client.update_status(self.resource, {**owner, "status": status})
        return recheck


class ReplicationControllerController(ReplicaSetController):
    """The same loop for v1 ReplicationControllers, whose selector is a plain label map."""
    name = "replicationcontroller"
    component = "replication-controller"
    service_account = "replication-controller"
    resource = builtin("v1", "replicationcontrollers")
    kind = "ReplicationController"

    def selector(self, owner: dict[str, Any]) -> dict[str, Any]:
        labels = (owner.get("spec") or {}).get("selector") or {}
        return {"matchLabels": labels} if labels else {}
