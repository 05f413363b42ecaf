"""DaemonSets: one pod of the template on every eligible node (upstream v1.32's controller).

Placement is the controller's, binding is the scheduler's: each pod is made for one node and
pinned to it by a required node affinity term `matchFields: metadata.name In [<node>]`
(replacing the template's required terms, as upstream's ReplaceDaemonSetPodNodeNameNodeAffinity
does, since the controller has already checked them), and the scheduler binds it there. A pod
"is on" a node if it is bound to it or pinned to it.

A node is eligible (`should_run`) when the template's `nodeName` (if any), `nodeSelector` and
required node affinity match it and every NoSchedule/NoExecute taint is tolerated, counting
the tolerations every daemon pod gets (not-ready and unreachable NoExecute; disk, memory and
PID pressure and unschedulable NoSchedule; network-unavailable for host-network pods). A pod
on a node that is no longer eligible keeps running unless a NoExecute taint is untolerated
(`should_continue`), as upstream.

Per reconcile, once expectations are met:
- manage: create a pod on each eligible node without one; on nodes with several, keep the
  oldest; delete pods that failed or ended, pods on nodes where they may not continue, and
  unscheduled pods pinned to nodes that no longer exist (nothing else would ever remove them);
- roll (RollingUpdate, only when manage changed nothing): pods whose `controller-revision-hash`
  is not the current revision's are old; unavailable old pods are deleted at once, available
  ones only while fewer than `maxUnavailable` (default 1; a percentage of the desired count,
  rounded up) nodes lack an available pod. The next reconcile's manage fills the emptied
  nodes from the new template. OnDelete leaves old pods until someone deletes them.
  (`maxSurge` is not implemented: updates always delete before they create.)
- history: the template's ControllerRevision (`history.py`), old ones trimmed to
  `revisionHistoryLimit` unless a live pod still uses them;
- status: desired/current/updated numbers scheduled, misscheduled, ready, available
  (ready for `minReadySeconds`), unavailable, observedGeneration, collisionCount.

Pods carry `controller-revision-hash` and `pod-template-generation` (the set's generation when
the pod was made). Nodes that are added, removed, relabelled or retainted requeue every set.
"""

from __future__ import annotations

import time
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.jsondoc import clone
from k8py.api.resources import builtin
from k8py.client.informer import by_owner_uid, key_of
from k8py.server.controllers.base import Controller, Expectations, controller_of, is_pod_ready
from k8py.server.controllers.history import (CONTROLLER_REVISIONS, REVISION_HASH, History,
                                             revision_hash)
from k8py.server.controllers.replicaset import (available_since, pod_from_template,
                                                slow_start)

DAEMONSETS = builtin("apps/v1", "daemonsets")
PODS = builtin("v1", "pods")
NODES = builtin("v1", "nodes")
TEMPLATE_GENERATION = "pod-template-generation"

# What upstream's AddOrUpdateDaemonPodTolerations gives every daemon pod.
DAEMON_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists",
     "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]
HOST_NETWORK_TOLERATION = {"key": "node.kubernetes.io/network-unavailable",
                           "operator": "Exists", "effect": "NoSchedule"}


# --- nodes and pods ---------------------------------------------------------------------------

def daemon_tolerations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod's tolerations plus the daemon ones it lacks."""
    tolerations = list(spec.get("tolerations") or [])
    extra = DAEMON_TOLERATIONS + ([HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])
    for toleration in extra:
        if not any(t.get("key") == toleration["key"] and t.get("effect") == toleration["effect"]
                   for t in tolerations):
            tolerations.append(toleration)
    return tolerations


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    if not toleration.get("key"):
        return operator == "Exists"  # an empty key with Exists tolerates everything
    if toleration["key"] != taint.get("key"):
        return False
    return operator == "Exists" or (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated(taints: list[dict[str, Any]], tolerations: list[dict[str, Any]],
                effects: tuple[str, ...]) -> bool:
    return any(taint.get("effect") in effects and
               not any(tolerates(t, taint) for t in tolerations) for taint in taints)


def _requirement_matches(requirement: dict[str, Any], values_of: dict[str, str]) -> bool:
    key, operator = requirement.get("key"), requirement.get("operator")
    values = requirement.get("values") or []
    present = key in values_of
    if operator == "In":
        return present and values_of[key] in values
    if operator == "NotIn":
        return not present or values_of[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, want = int(values_of[key]), int(values[0])
        except ValueError:
            return False
        return have > want if operator == "Gt" else have < want
    return False


def node_selector_matches(node_selector: dict[str, Any], node: dict[str, Any]) -> bool:
    """A v1 NodeSelector (ORed terms of ANDed label expressions and field expressions)."""
    labels = node["metadata"].get("labels") or {}
    fields = {"metadata.name": node["metadata"]["name"]}
    for term in node_selector.get("nodeSelectorTerms") or ():
        expressions = term.get("matchExpressions") or []
        field_expressions = term.get("matchFields") or []
        if not expressions and not field_expressions:
            continue  # an empty term matches no node
        if all(_requirement_matches(r, labels) for r in expressions) and \
                all(_requirement_matches(r, fields) for r in field_expressions):
            return True
    return False


def node_fits(spec: dict[str, Any], node: dict[str, Any]) -> tuple[bool, bool]:
    """(should_run, should_continue) for a daemon pod of this pod spec on this node."""
    name = node["metadata"]["name"]
    if spec.get("nodeName") and spec["nodeName"] != name:
        return False, False
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False, False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if required and not node_selector_matches(required, node):
        return False, False
    taints = (node.get("spec") or {}).get("taints") or []
    tolerations = daemon_tolerations(spec)
    if untolerated(taints, tolerations, ("NoSchedule", "NoExecute")):
        return False, not untolerated(taints, tolerations, ("NoExecute",))
    return True, True


def pinned_affinity(affinity: dict[str, Any] | None, node_name: str) -> dict[str, Any]:
    """The affinity with its required node terms replaced by one naming `node_name`."""
    affinity = clone(affinity or {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [{
        "matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}
    return affinity


def target_node(pod: dict[str, Any]) -> str | None:
    """The node a daemon pod is bound to, or pinned to by its affinity."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or ():
        for field in term.get("matchFields") or ():
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and \
                    len(field.get("values") or ()) == 1:
                return field["values"][0]
    return None


def _age(pod: dict[str, Any]) -> tuple:
    return (timestamps.parse(pod["metadata"].get("creationTimestamp")) or 0.0,
            pod["metadata"]["name"])


def max_unavailable(ds: dict[str, Any], desired: int) -> int:
    rolling = ((ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {})
    value = rolling.get("maxUnavailable", 1)
    if isinstance(value, str) and value.endswith("%"):
        count = -(-int(value[:-1]) * desired // 100)  # rounded up
    else:
        count = int(value)
    return max(count, 1)


# --- the controller ---------------------------------------------------------------------------

class DaemonSetController(Controller):
    name = "daemonset"
    service_account = "daemon-set-controller"
    workers = 2

    def setup(self) -> None:
        self.expectations = Expectations()
        self.sets = self.informer(DAEMONSETS)
        self.sets.add_handlers(self.enqueue_object, lambda old, new: self.enqueue_object(new),
                               lambda ds: self.expectations.forget(key_of(ds)))
        self.pods = self.informer(PODS)
        self.pods.add_index("owner", by_owner_uid)
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)
        self.nodes = self.informer(NODES)
        self.nodes.add_handlers(self._enqueue_all, self._node_updated, self._enqueue_all)
        self.history = History(self.client, self.informer(CONTROLLER_REVISIONS))

    # --- handlers ---------------------------------------------------------------------------

    def _enqueue_all(self, _node: dict[str, Any] | None = None) -> None:
        for ds in self.sets.list():
            self.enqueue_object(ds)

    def _node_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        if old["metadata"].get("labels") != new["metadata"].get("labels") or \
                old.get("spec") != new.get("spec"):
            self._enqueue_all()

    def _pod_added(self, pod: dict[str, Any]) -> None:
        key = self.enqueue_owner(pod, "DaemonSet")
        if key is not None:
            self.expectations.observed_add(key)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = self.enqueue_owner(new, "DaemonSet")
        if key is not None and new["metadata"].get("deletionTimestamp") and \
                not old["metadata"].get("deletionTimestamp"):
            self.expectations.observed_delete(key)

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = self.enqueue_owner(pod, "DaemonSet")
        if key is not None and not pod["metadata"].get("deletionTimestamp"):
            self.expectations.observed_delete(key)

    # --- reconciling ------------------------------------------------------------------------

    def pods_by_node(self, ds: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """The set's pods by the node they are on; finished pods being deleted left out."""
        uid = ds["metadata"]["uid"]
        out: dict[str, list[dict[str, Any]]] = {}
        for pod in self.pods.by_index("owner", uid):
            if (controller_of(pod) or {}).get("uid") != uid:
                continue
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed") and pod["metadata"].get("deletionTimestamp"):
                continue
            node = target_node(pod)
            if node:
                out.setdefault(node, []).append(pod)
        for pods in out.values():
            pods.sort(key=_age)
        return out

    async def reconcile(self, key: str) -> float | None:
        ds = self.sets.get(key)
        if ds is None:
            self.expectations.forget(key)
            return None
        if ds["metadata"].get("deletionTimestamp"):
            return None
        revisions = self.history.owned(ds)
        current, collisions = await self.history.current(ds, revisions)
        hash_ = revision_hash(current)
        nodes = self.nodes.list()
        by_node = self.pods_by_node(ds)
        if self.expectations.satisfied(key):
            changed = await self._manage(key, ds, nodes, by_node, hash_)
            strategy = (ds["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate")
            if not changed and strategy == "RollingUpdate":
                await self._roll(key, ds, nodes, by_node, hash_)
            live = {(p["metadata"].get("labels") or {}).get(REVISION_HASH)
                    for pods in by_node.values() for p in pods}
            await self.history.truncate(ds, revisions, {current["metadata"]["name"]}, live)
        return await self._write_status(ds, nodes, by_node, hash_, collisions)

    async def _manage(self, key: str, ds: dict[str, Any], nodes: list[dict[str, Any]],
                      by_node: dict[str, list[dict[str, Any]]], hash_: str) -> bool:
        spec = (ds["spec"].get("template") or {}).get("spec") or {}
        to_create: list[str] = []
        to_delete: list[dict[str, Any]] = []
        node_names = set()
        for node in nodes:
            name = node["metadata"]["name"]
            node_names.add(name)
            should_run, should_continue = node_fits(spec, node)
            pods = by_node.get(name, [])
            if should_run and not pods:
                to_create.append(name)
            elif should_continue:
                running = []
                for pod in pods:
                    if pod["metadata"].get("deletionTimestamp"):
                        continue
                    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                        to_delete.append(pod)
                    else:
                        running.append(pod)
                to_delete.extend(running[1:])  # keep the oldest
            else:
                to_delete.extend(p for p in pods if not p["metadata"].get("deletionTimestamp"))
        for name, pods in by_node.items():
            if name not in node_names:
                to_delete.extend(p for p in pods if not (p.get("spec") or {}).get("nodeName")
                                 and not p["metadata"].get("deletionTimestamp"))
        await self._sync_nodes(key, ds, to_create, to_delete, hash_)
        return bool(to_create or to_delete)

    async def _roll(self, key: str, ds: dict[str, Any], nodes: list[dict[str, Any]],
                    by_node: dict[str, list[dict[str, Any]]], hash_: str) -> None:
        spec = (ds["spec"].get("template") or {}).get("spec") or {}
        min_ready = ds["spec"].get("minReadySeconds", 0)
        now = time.time()
        desired = unavailable = 0
        old_unavailable: list[dict[str, Any]] = []
        old_available: list[dict[str, Any]] = []
        for node in nodes:
            if not node_fits(spec, node)[0]:
                continue
            desired += 1
            pods = by_node.get(node["metadata"]["name"], [])
            if not any(available_since(p, min_ready, now) == 0 for p in pods):
                unavailable += 1
            for pod in pods:
                if (pod["metadata"].get("labels") or {}).get(REVISION_HASH) == hash_ or \
                        pod["metadata"].get("deletionTimestamp"):
                    continue
                if available_since(pod, min_ready, now) == 0:
                    old_available.append(pod)
                else:
                    old_unavailable.append(pod)
        budget = max_unavailable(ds, desired)
        to_delete = list(old_unavailable)
        for pod in sorted(old_available, key=_age):
            if unavailable >= budget:
                break
            to_delete.append(pod)
            unavailable += 1
        await self._sync_nodes(key, ds, [], to_delete, hash_)

    def new_pod(self, ds: dict[str, Any], node_name: str, hash_: str) -> dict[str, Any]:
        template = ds["spec"].get("template") or {}
        pod = pod_from_template(template, ds, extra_labels={
            REVISION_HASH: hash_,
            TEMPLATE_GENERATION: str(ds["metadata"].get("generation", 1))})
        spec = clone(pod["spec"])
        spec["tolerations"] = daemon_tolerations(spec)
        spec["affinity"] = pinned_affinity(spec.get("affinity"), node_name)
        pod["spec"] = spec
        return pod

    async def _sync_nodes(self, key: str, ds: dict[str, Any], to_create: list[str],
                          to_delete: list[dict[str, Any]], hash_: str) -> None:
        namespace = ds["metadata"]["namespace"]
        if to_delete:
            self.expectations.expect(key, deletes=len(to_delete))
            for pod in to_delete:
                try:
                    await self.client.delete(PODS, pod["metadata"]["name"], namespace,
                                             preconditions={"uid": pod["metadata"]["uid"]})
                except (errors.NotFound, errors.Conflict):
                    self.expectations.observed_delete(key)
                    continue
                await self.record(DAEMONSETS, ds, "Normal", "SuccessfulDelete",
                                  f"Deleted pod: {pod['metadata']['name']}")
        if to_create:
            self.expectations.expect(key, adds=len(to_create))
            pending = iter(to_create)

            async def create() -> None:
                pod = await self.client.create(PODS, self.new_pod(ds, next(pending), hash_),
                                               namespace)
                await self.record(DAEMONSETS, ds, "Normal", "SuccessfulCreate",
                                  f"Created pod: {pod['metadata']['name']}")

            done, error = await slow_start(len(to_create), create)
            for _ in range(len(to_create) - done):
                self.expectations.observed_add(key)
            if error is not None:
                raise error

    async def _write_status(self, ds: dict[str, Any], nodes: list[dict[str, Any]],
                            by_node: dict[str, list[dict[str, Any]]], hash_: str,
                            collisions: int) -> float | None:
        spec = (ds["spec"].get("template") or {}).get("spec") or {}
        min_ready = ds["spec"].get("minReadySeconds", 0)
        now = time.time()
        desired = current = misscheduled = ready = available = updated = 0
        recheck = None
        for node in nodes:
            should_run, _ = node_fits(spec, node)
            pods = by_node.get(node["metadata"]["name"], [])
            if not should_run:
                misscheduled += bool(pods)
                continue
            desired += 1
            if not pods:
                continue
            current += 1
            pod = pods[0]
            if is_pod_ready(pod):
                ready += 1
                wait = available_since(pod, min_ready, now)
                if wait == 0:
                    available += 1
                elif wait is not None:
                    recheck = wait if recheck is None else min(recheck, wait)
            if (pod["metadata"].get("labels") or {}).get(REVISION_HASH) == hash_:
                updated += 1
        status = {"currentNumberScheduled": current, "numberMisscheduled": misscheduled,
                  "desiredNumberScheduled": desired, "numberReady": ready,
                  "observedGeneration": ds["metadata"].get("generation", 1),
                  "updatedNumberScheduled": updated, "numberAvailable": available,
                  "numberUnavailable": desired - available}
        if collisions:
            status["collisionCount"] = collisions
        old = ds.get("status") or {}
        if old.get("conditions"):
            status["conditions"] = old["conditions"]
        if any(old.get(k, 0) != v for k, v in status.items() if k != "conditions"):
            await self.client.update_status(DAEMONSETS, {**ds, "status": status})
        return recheck
