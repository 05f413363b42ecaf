"""StatefulSets: pods with stable names, ordinals and storage (upstream v1.32's controller).

Identity: the pod of ordinal i (from `spec.ordinals.start`, default 0) is `<set>-<i>`,
labelled `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
`controller-revision-hash` (the *name* of the revision it was made from, as upstream), with
`hostname` = its name and `subdomain` = `serviceName`. Each `volumeClaimTemplates` entry
becomes a PersistentVolumeClaim `<claim>-<set>-<i>`, created before the pod (and kept when
it exists already) and mounted as the pod's volume of the claim's name. A pod deleted by
anyone is recreated under the same name, with the same claims.

Per reconcile, over the pods the set controls (split by ordinal into the wanted range and
the condemned rest):
1. wanted ordinals, lowest first: a failed or succeeded pod is deleted (to be recreated); a
   missing one is created from the current revision if its ordinal is below the rolling
   update's `partition`, else from the update revision. Under `OrderedReady` the pass stops at
   the first pod it creates, or that is terminating or not yet Running, Ready and available
   (`minReadySeconds`): ordinal i is created only once 0..i-1 are Running and Ready.
   `Parallel` creates every missing pod at once and waits for nothing.
2. condemned ordinals, highest first: deleted; under `OrderedReady` one at a time, each only
   once the one above is gone.
3. RollingUpdate (only when 1 and 2 had nothing to wait for): from the highest ordinal down
   to `partition`, the first pod not of the update revision is deleted (step 1 recreates it
   from the new template) and the pass ends; a pod that is not healthy yet also ends it. So
   one pod at a time is replaced, each after its successor is Ready. `OnDelete` replaces only
   pods someone else deleted.
Status: replicas, readyReplicas, availableReplicas, currentReplicas, updatedReplicas,
currentRevision, updateRevision, collisionCount, observedGeneration. When a rolling update
has made every pod updated and ready, the update revision becomes the current one.

Claims' retention (`persistentVolumeClaimRetentionPolicy`), as upstream, through the garbage
collector: `whenDeleted: Delete` makes the set an owner of its claims; `whenScaled: Delete`
makes a condemned pod the owner of its claims just before deleting it, so they go with it.

Revisions are ControllerRevisions (`history.py`). Left out of upstream's behaviour: the alpha
`maxUnavailable`, orphan adoption.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from k8py.api import errors
from k8py.api.jsondoc import clone
from k8py.api.resources import builtin
from k8py.client.informer import by_owner_uid
from k8py.server.controllers.base import Controller, controller_of, owner_reference
from k8py.server.controllers.history import (CONTROLLER_REVISIONS, REVISION_HASH, History,
                                             template_of)
from k8py.server.controllers.replicaset import available_since, pod_from_template

STATEFULSETS = builtin("apps/v1", "statefulsets")
PODS = builtin("v1", "pods")
CLAIMS = builtin("v1", "persistentvolumeclaims")
POD_NAME = "statefulset.kubernetes.io/pod-name"
POD_INDEX = "apps.kubernetes.io/pod-index"
_ORDINAL = re.compile(r"^(.*)-([0-9]+)$")


def ordinal_of(set_name: str, pod: dict[str, Any]) -> int | None:
    match = _ORDINAL.match(pod["metadata"]["name"])
    if match is None or match.group(1) != set_name:
        return None
    return int(match.group(2))


def claim_name(claim: dict[str, Any], set_name: str, ordinal: int) -> str:
    return f"{claim['metadata']['name']}-{set_name}-{ordinal}"


def _terminating(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def _finished(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def _revision(pod: dict[str, Any]) -> str | None:
    return (pod["metadata"].get("labels") or {}).get(REVISION_HASH)


class _Wait(Exception):
    """Ends a pass under OrderedReady: something must happen before the next step."""


class StatefulSetController(Controller):
    name = "statefulset"
    service_account = "statefulset-controller"
    workers = 2

    def setup(self) -> None:
        self.sets = self.informer(STATEFULSETS)
        self.sets.add_handlers(self.enqueue_object, lambda old, new: self.enqueue_object(new))
        self.pods = self.informer(PODS)
        self.pods.add_index("owner", by_owner_uid)
        self.pods.add_handlers(self._pod_changed, lambda old, new: self._pod_changed(new),
                               self._pod_changed)
        self.history = History(self.client, self.informer(CONTROLLER_REVISIONS))

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        self.enqueue_owner(pod, "StatefulSet")

    def owned_pods(self, sts: dict[str, Any]) -> list[dict[str, Any]]:
        uid = sts["metadata"]["uid"]
        return [p for p in self.pods.by_index("owner", uid)
                if (controller_of(p) or {}).get("uid") == uid]

    # --- pods and claims --------------------------------------------------------------------

    def new_pod(self, sts: dict[str, Any], ordinal: int, template: dict[str, Any],
                revision: str) -> dict[str, Any]:
        set_name = sts["metadata"]["name"]
        name = f"{set_name}-{ordinal}"
        pod = pod_from_template(template, sts, name=name, extra_labels={
            POD_NAME: name, POD_INDEX: str(ordinal), REVISION_HASH: revision})
        spec = clone(pod["spec"])
        spec["hostname"] = name
        if sts["spec"].get("serviceName"):
            spec["subdomain"] = sts["spec"]["serviceName"]
        claims = sts["spec"].get("volumeClaimTemplates") or []
        if claims:
            names = {c["metadata"]["name"] for c in claims}
            volumes = [v for v in spec.get("volumes") or [] if v.get("name") not in names]
            volumes += [{"name": c["metadata"]["name"], "persistentVolumeClaim": {
                "claimName": claim_name(c, set_name, ordinal)}} for c in claims]
            spec["volumes"] = volumes
        pod["spec"] = spec
        return pod

    async def _create_claims(self, sts: dict[str, Any], ordinal: int) -> None:
        namespace = sts["metadata"]["namespace"]
        selector_labels = (sts["spec"].get("selector") or {}).get("matchLabels") or {}
        policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        for template in sts["spec"].get("volumeClaimTemplates") or []:
            metadata = template.get("metadata") or {}
            claim: dict[str, Any] = {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim_name(template, sts["metadata"]["name"], ordinal),
                             "namespace": namespace,
                             "labels": {**(metadata.get("labels") or {}), **selector_labels}},
                "spec": clone(template.get("spec") or {})}
            if metadata.get("annotations"):
                claim["metadata"]["annotations"] = dict(metadata["annotations"])
            if policy.get("whenDeleted") == "Delete":
                claim["metadata"]["ownerReferences"] = [
                    {**owner_reference(sts), "controller": False}]
            try:
                await self.client.create(CLAIMS, claim, namespace)
            except errors.AlreadyExists:
                pass  # claims outlive their pods: the old one is the pod's storage

    async def _condemn_claims(self, sts: dict[str, Any], pod: dict[str, Any],
                              ordinal: int | None) -> None:
        """Under `whenScaled: Delete`, the condemned pod owns its claims (the garbage
        collector deletes them once the pod is gone)."""
        policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenScaled") != "Delete" or ordinal is None:
            return
        ref = {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
               "uid": pod["metadata"]["uid"]}
        for template in sts["spec"].get("volumeClaimTemplates") or []:
            try:
                claim = await self.client.get(CLAIMS, claim_name(
                    template, sts["metadata"]["name"], ordinal), sts["metadata"]["namespace"])
            except errors.NotFound:
                continue
            refs = claim["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == ref["uid"] for r in refs):
                continue
            claim["metadata"]["ownerReferences"] = [*refs, ref]
            await self.client.update(CLAIMS, claim)

    async def _create(self, sts: dict[str, Any], ordinal: int, template: dict[str, Any],
                      revision: str) -> None:
        await self._create_claims(sts, ordinal)
        pod = await self.client.create(PODS, self.new_pod(sts, ordinal, template, revision),
                                       sts["metadata"]["namespace"])
        await self.record(STATEFULSETS, sts, "Normal", "SuccessfulCreate",
                          f"create Pod {pod['metadata']['name']} in StatefulSet "
                          f"{sts['metadata']['name']} successful")

    async def _delete(self, pod: dict[str, Any]) -> None:
        try:
            await self.client.delete(PODS, pod["metadata"]["name"],
                                     pod["metadata"]["namespace"],
                                     preconditions={"uid": pod["metadata"]["uid"]})
        except (errors.NotFound, errors.Conflict):
            pass  # gone already, or replaced by a new pod of that name

    # --- reconciling ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        sts = self.sets.get(key)
        if sts is None:
            return None
        revisions = self.history.owned(sts)
        update, collisions = await self.history.current(sts, revisions)
        update_name = update["metadata"]["name"]
        current = next((r for r in revisions if r["metadata"]["name"] ==
                        (sts.get("status") or {}).get("currentRevision")), update)
        current_name = current["metadata"]["name"]
        pods = self.owned_pods(sts)
        recheck = None
        if not sts["metadata"].get("deletionTimestamp"):
            try:
                recheck = await self._sync(sts, pods, template_of(current), current_name,
                                           sts["spec"].get("template") or {}, update_name)
            except _Wait:
                pass
            keep = {current_name, update_name} | {_revision(p) for p in pods}
            await self.history.truncate(sts, revisions, keep, set())
        await self._write_status(sts, pods, current_name, update_name, collisions)
        return recheck

    async def _sync(self, sts: dict[str, Any], pods: list[dict[str, Any]],
                    current_template: dict[str, Any], current_name: str,
                    update_template: dict[str, Any], update_name: str) -> float | None:
        spec = sts["spec"]
        name = sts["metadata"]["name"]
        start = (spec.get("ordinals") or {}).get("start", 0)
        count = spec.get("replicas", 1)
        monotonic = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        strategy = spec.get("updateStrategy") or {}
        rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
        partition = (strategy.get("rollingUpdate") or {}).get("partition", 0) if rolling else 0
        min_ready = spec.get("minReadySeconds", 0)
        now = time.time()

        replicas: list[dict[str, Any] | None] = [None] * count
        condemned: list[tuple[int, dict[str, Any]]] = []
        for pod in pods:
            ordinal = ordinal_of(name, pod)
            if ordinal is None:
                continue
            if start <= ordinal < start + count:
                replicas[ordinal - start] = pod
            else:
                condemned.append((ordinal, pod))
        condemned.sort(key=lambda item: item[0])

        def wait() -> None:
            if monotonic:
                raise _Wait

        recheck = None

        def healthy(pod: dict[str, Any]) -> bool:
            nonlocal recheck
            if not _running(pod):
                return False
            remaining = available_since(pod, min_ready, now)
            if remaining is not None and remaining > 0:
                recheck = remaining if recheck is None else min(recheck, remaining)
            return remaining == 0

        # 1. the wanted ordinals, lowest first
        creations = []
        for index, pod in enumerate(replicas):
            ordinal = start + index
            if pod is not None and _finished(pod) and not _terminating(pod):
                await self._delete(pod)
                wait()
                continue
            if pod is None:
                # ordinals below the partition stay at the current revision
                if rolling and ordinal < partition:
                    creation = self._create(sts, ordinal, current_template, current_name)
                else:
                    creation = self._create(sts, ordinal, update_template, update_name)
                if monotonic:
                    await creation
                    raise _Wait
                creations.append(creation)
                continue
            if _terminating(pod) or not healthy(pod):
                wait()
        if creations:
            results = await asyncio.gather(*creations, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

        # 2. the condemned ordinals, highest first
        first_unhealthy = next((p for p in [*replicas, *(p for _, p in condemned)]
                                if p is not None and not healthy(p)), None)
        for _, pod in reversed(condemned):
            if _terminating(pod):
                wait()
                continue
            if monotonic and not healthy(pod) and pod is not first_unhealthy:
                raise _Wait
            await self._condemn_claims(sts, pod, ordinal_of(name, pod))
            await self._delete(pod)
            wait()

        # 3. the rolling update, highest ordinal first, down to the partition
        if rolling:
            for index in range(len(replicas) - 1, max(partition, 0) - 1, -1):
                pod = replicas[index]
                if pod is None:
                    break
                if _revision(pod) != update_name and not _terminating(pod):
                    await self._delete(pod)
                    break
                if not healthy(pod):
                    break
        return recheck

    async def _write_status(self, sts: dict[str, Any], pods: list[dict[str, Any]],
                            current_name: str, update_name: str, collisions: int) -> None:
        min_ready = sts["spec"].get("minReadySeconds", 0)
        now = time.time()
        replicas = ready = available = current = updated = 0
        for pod in pods:
            replicas += 1
            if _running(pod):
                since = available_since(pod, min_ready, now)
                if since is not None:
                    ready += 1
                    available += since == 0
            if not _terminating(pod):
                current += _revision(pod) == current_name
                updated += _revision(pod) == update_name
        strategy = (sts["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy == "RollingUpdate" and updated == replicas and ready == replicas:
            current, current_name = updated, update_name
        old = sts.get("status") or {}
        status = {"observedGeneration": sts["metadata"].get("generation", 1),
                  "replicas": replicas, "readyReplicas": ready,
                  "currentReplicas": current, "updatedReplicas": updated,
                  "currentRevision": current_name, "updateRevision": update_name,
                  "collisionCount": collisions, "availableReplicas": available}
        if old.get("conditions"):
            status["conditions"] = old["conditions"]
        if any(old.get(k, 0) != v for k, v in status.items() if k != "conditions"):
            await self.client.update_status(STATEFULSETS, {**sts, "status": status})
