"""The namespace lifecycle: a deleted namespace loses all its contents, then itself
(upstream's pkg/controller/namespace).

Deleting a namespace only marks it (deletionTimestamp, phase Terminating); it stays while
its `spec.finalizers` holds `kubernetes`. Per reconcile of such a namespace:
- read it live; gone or not being deleted: nothing to do;
- for every namespaced resource (the built-ins, and the custom resources of the CRDs that
  exist now), list its objects in the namespace and delete each one not already being
  deleted (propagation Background; pods with their grace period, for their kubelet to end);
- set the status conditions upstream keeps (`NamespaceDeletionDiscoveryFailure`,
  `NamespaceDeletionGroupVersionParsingFailure`, `NamespaceDeletionContentFailure`,
  `NamespaceContentRemaining`, `NamespaceFinalizersRemaining`), their "ok" variants when
  nothing is wrong, writing status only when one changed;
- while anything remains, look again after upstream's estimate (half the longest pod grace
  period, or of 15 s for objects held by finalizers, plus one second), or sooner when a pod
  in the namespace goes away (pods are what usually remains);
- when nothing remains, drop `kubernetes` from `spec.finalizers` through the `finalize`
  subresource; the API server then deletes the namespace.
"""

from __future__ import annotations

import logging
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.resources import BUILTIN, Resource, builtin, from_crd
from k8py.server.controllers.base import Controller

log = logging.getLogger(__name__)

NAMESPACES = builtin("v1", "namespaces")
PODS = builtin("v1", "pods")
CRDS = builtin("apiextensions.k8s.io/v1", "customresourcedefinitions")
FINALIZER = "kubernetes"
FINALIZER_ESTIMATE = 15  # seconds upstream assumes finalizers take

# Pods last: their owners go first, so no controller is still trying to replace them.
# (one version per kind: the one it is stored in)
NAMESPACED = tuple(sorted((r for r in BUILTIN if r.namespaced and not r.converts and
                           {"list", "delete"} <= set(r.verbs)), key=lambda r: r is PODS))

CONDITION_TYPES = ("NamespaceDeletionDiscoveryFailure",
                   "NamespaceDeletionGroupVersionParsingFailure",
                   "NamespaceDeletionContentFailure",
                   "NamespaceContentRemaining",
                   "NamespaceFinalizersRemaining")
OK = {
    "NamespaceDeletionDiscoveryFailure": ("ResourcesDiscovered",
                                          "All resources successfully discovered"),
    "NamespaceDeletionGroupVersionParsingFailure": ("ParsedGroupVersions",
                                                    "All legacy kube types successfully parsed"),
    "NamespaceDeletionContentFailure": ("ContentDeleted", "All content successfully deleted, "
                                        "may be waiting on finalization"),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": ("ContentRemoved", "All content successfully removed"),
}


def _pod_estimate(pod: dict[str, Any]) -> int:
    """Seconds a pod may still take to end (upstream's estimateGracefulTermination)."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    grace = pod["metadata"].get("deletionGracePeriodSeconds")
    if grace is None:
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    return int(grace or 0)


class Remaining:
    """What one pass over the namespace's contents left behind."""

    def __init__(self) -> None:
        self.by_resource: dict[Resource, int] = {}
        self.by_finalizer: dict[str, int] = {}
        self.failures: list[str] = []
        self.discovery_failure: str | None = None
        self.estimate = 0

    def __bool__(self) -> bool:
        return bool(self.by_resource or self.failures or self.discovery_failure)

    def conditions(self) -> dict[str, tuple[str, str, str]]:
        """Condition type -> (status, reason, message) for every type upstream keeps."""
        found: dict[str, tuple[str, str, str]] = {}
        if self.discovery_failure:
            found["NamespaceDeletionDiscoveryFailure"] = ("True", "DiscoveryFailed",
                                                          self.discovery_failure)
        if self.failures:
            found["NamespaceDeletionContentFailure"] = (
                "True", "ContentDeletionFailed",
                f"Failed to delete all resource types, {len(self.failures)} remaining: "
                f"{', '.join(sorted(self.failures))}")
        if self.by_resource:
            parts = sorted(f"{r.plural}.{r.group} has {n} resource instances"
                           for r, n in self.by_resource.items())
            found["NamespaceContentRemaining"] = (
                "True", "SomeResourcesRemain",
                f"Some resources are remaining: {', '.join(parts)}")
        if self.by_finalizer:
            parts = sorted(f"{f} in {n} resource instances"
                           for f, n in self.by_finalizer.items())
            found["NamespaceFinalizersRemaining"] = (
                "True", "SomeFinalizerRemain",
                f"Some finalizers are remaining: {', '.join(parts)}")
        for kind in CONDITION_TYPES:
            found.setdefault(kind, ("False", *OK[kind]))
        return found


class NamespaceController(Controller):
    name = "namespace"
    service_account = "namespace-controller"
    workers = 2

    def setup(self) -> None:
        self.namespaces = self.informer(NAMESPACES)
        self.namespaces.add_handlers(self._changed, lambda old, new: self._changed(new))
        self.pods = self.informer(PODS)
        self.pods.add_handlers(on_delete=self._pod_deleted)

    def _changed(self, namespace: dict[str, Any]) -> None:
        if namespace["metadata"].get("deletionTimestamp"):
            self.enqueue(namespace["metadata"]["name"])

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        namespace = self.namespaces.get(pod["metadata"].get("namespace") or "")
        if namespace is not None and namespace["metadata"].get("deletionTimestamp"):
            self.enqueue(namespace["metadata"]["name"])

    async def reconcile(self, key: str) -> float | None:
        if self.namespaces.get(key) is None:
            return None
        try:
            namespace = await self.client.get(NAMESPACES, key)
        except errors.NotFound:
            return None
        if not namespace["metadata"].get("deletionTimestamp"):
            return None
        finalizers = (namespace.get("spec") or {}).get("finalizers") or []
        if FINALIZER not in finalizers:
            return None  # finalized: the API server deletes it once other finalizers are done
        remaining = await self._delete_content(key)
        namespace = await self._write_conditions(namespace, remaining)
        if remaining:
            log.debug("%s: %s: content remains, estimate %d s", self.name, key,
                      remaining.estimate)
            if remaining.failures or remaining.discovery_failure:
                raise errors.InternalError(
                    f"namespace {key}: " + "; ".join(remaining.failures
                                                     or [remaining.discovery_failure]))
            return remaining.estimate / 2 + 1
        finalized = {**namespace, "spec": {**(namespace.get("spec") or {}),
                                           "finalizers": [f for f in finalizers
                                                          if f != FINALIZER]}}
        try:
            await self.client.update(NAMESPACES, finalized, subresource="finalize")
        except errors.NotFound:
            pass
        return None

    async def _resources(self, remaining: Remaining) -> list[Resource]:
        resources = list(NAMESPACED)
        try:
            crds = (await self.client.list(CRDS))["items"]
        except errors.StatusError as exc:
            remaining.discovery_failure = exc.message
            return resources
        custom = []
        for crd in crds:
            served = [r for r in from_crd(crd) if r.namespaced]
            storage = [v.get("name") for v in (crd.get("spec") or {}).get("versions") or ()
                       if v.get("storage")]
            chosen = [r for r in served if r.version in storage] or served
            if chosen:
                custom.append(chosen[0])
        return custom + resources  # custom resources' controllers may need the built-ins

    async def _delete_content(self, namespace: str) -> Remaining:
        remaining = Remaining()
        for resource in await self._resources(remaining):
            try:
                await self._delete_all(resource, namespace, remaining)
            except errors.StatusError as exc:
                remaining.failures.append(f'{resource.plural}.{resource.group}: {exc.message}')
        return remaining

    async def _delete_all(self, resource: Resource, namespace: str,
                          remaining: Remaining) -> None:
        try:
            items = (await self.client.list(resource, namespace))["items"]
        except (errors.NotFound, errors.MethodNotAllowed):
            return  # a custom resource whose CRD went away meanwhile
        left = 0
        for item in items:
            metadata = item["metadata"]
            if resource is PODS:
                remaining.estimate = max(remaining.estimate, _pod_estimate(item))
            if not metadata.get("deletionTimestamp"):
                try:
                    item = await self.client.delete(
                        resource, metadata["name"], namespace, propagation="Background",
                        preconditions={"uid": metadata["uid"]})
                except (errors.NotFound, errors.Conflict):
                    continue  # gone, or replaced (the replacement is seen next time)
                if item.get("kind") == "Status":
                    continue  # deleted at once
            left += 1
            finalizers = item["metadata"].get("finalizers") or ()
            for finalizer in finalizers:
                remaining.by_finalizer[finalizer] = remaining.by_finalizer.get(finalizer, 0) + 1
            if finalizers:
                remaining.estimate = max(remaining.estimate, FINALIZER_ESTIMATE)
        if left:
            remaining.by_resource[resource] = left

    async def _write_conditions(self, namespace: dict[str, Any],
                                remaining: Remaining) -> dict[str, Any]:
        status = namespace.get("status") or {}
        conditions = [dict(c) for c in status.get("conditions") or ()]
        changed = False
        for kind, (state, reason, message) in remaining.conditions().items():
            old = next((c for c in conditions if c.get("type") == kind), None)
            if old is None:
                conditions.append({"type": kind, "status": state,
                                   "lastTransitionTime": timestamps.now(),
                                   "reason": reason, "message": message})
                changed = True
            elif (old.get("status"), old.get("reason"), old.get("message")) != \
                    (state, reason, message):
                if old.get("status") != state:
                    old["lastTransitionTime"] = timestamps.now()
                old.update(status=state, reason=reason, message=message)
                changed = True
        if not changed:
            return namespace
        return await self.client.update_status(
            NAMESPACES, {**namespace, "status": {**status, "phase": "Terminating",
                                                 "conditions": conditions}})
