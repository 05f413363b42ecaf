"""Node lifecycle (upstream's node lifecycle controller and its NoExecute taint manager): notice
nodes that stopped reporting, taint them, and evict the pods that do not tolerate it.

Health: a node is heard from when its Lease in `kube-node-lease` is renewed or its Ready
condition's heartbeat moves. Like upstream, the time is when this controller *saw* the change
(not the timestamps written by the node, so clocks need not agree), and a node is given a full
grace period from the controller's start. A node not heard from for `settings.node_monitor_grace`
seconds gets every condition set to Unknown (reason NodeStatusUnknown, "Kubelet stopped
posting node status."); the conditions come back only when its kubelet posts them again.

Taints follow the conditions (upstream's TaintNodesByCondition and taint-based eviction):
Ready=Unknown → `node.kubernetes.io/unreachable` NoSchedule and NoExecute; Ready=False →
`node.kubernetes.io/not-ready` NoSchedule and NoExecute; Memory/Disk/PID pressure and
NetworkUnavailable → their NoSchedule taints; `spec.unschedulable` →
`node.kubernetes.io/unschedulable`. Taints this controller does not own are left alone; a taint
that stays keeps its `timeAdded`. When a node's Ready is not True its pods get Ready=False.

Eviction: a pod on a node with NoExecute taints is deleted (after a `DisruptionTarget`
condition, reason DeletionByTaintManager) at once if it does not tolerate one of them, or
`tolerationSeconds` after the taint's `timeAdded` (the smallest of its matching tolerations);
a toleration without seconds tolerates it forever. The API server's defaults give every pod
300 s for not-ready and unreachable (DefaultTolerationSeconds). The work key is the node name:
one reconcile computes conditions, taints and evictions for a node and its pods, and asks to
be called again at the next deadline.
"""

from __future__ import annotations

import time
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.resources import builtin
from k8py.client.informer import BY_NODE
from k8py.server.controllers.base import Controller, is_pod_ready

NODES = builtin("v1", "nodes")
PODS = builtin("v1", "pods")
LEASES = builtin("coordination.k8s.io/v1", "leases")
LEASE_NAMESPACE = "kube-node-lease"

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
CONDITION_TAINTS = {  # condition type → (status that taints, taint key)
    "MemoryPressure": ("True", "node.kubernetes.io/memory-pressure"),
    "DiskPressure": ("True", "node.kubernetes.io/disk-pressure"),
    "PIDPressure": ("True", "node.kubernetes.io/pid-pressure"),
    "NetworkUnavailable": ("True", "node.kubernetes.io/network-unavailable"),
}
OWNED_TAINTS = {NOT_READY, UNREACHABLE, UNSCHEDULABLE,
                *(key for _, key in CONDITION_TAINTS.values())}
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
NODE_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return (obj.get("status") or {}).get("conditions") or []


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for item in _conditions(obj):
        if item.get("type") == kind:
            return item
    return None


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Upstream's Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def eviction_delay(pod: dict[str, Any], taints: list[dict[str, Any]],
                   now: float) -> float | None:
    """Seconds until `pod` must go because of the NoExecute `taints` (0: now); None: never."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    deadline = None
    for taint in taints:
        matching = [t for t in tolerations if tolerates(t, taint)]
        if not matching:
            return 0.0
        limits = [t["tolerationSeconds"] for t in matching
                  if isinstance(t.get("tolerationSeconds"), (int, float))]
        if len(limits) < len(matching):
            continue  # a toleration without seconds tolerates it forever
        added = timestamps.parse(taint.get("timeAdded")) or now
        at = added + max(0, min(limits))
        deadline = at if deadline is None else min(deadline, at)
    return None if deadline is None else max(0.0, deadline - now)


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    service_account = "node-controller"
    workers = 4

    def setup(self) -> None:
        self._heard: dict[str, tuple[Any, float]] = {}  # node → (what was heard, when)
        self.nodes = self.informer(NODES)
        self.nodes.add_handlers(self._node_changed, lambda old, new: self._node_changed(new),
                                self._node_deleted)
        self.leases = self.informer(LEASES, namespace=LEASE_NAMESPACE)
        self.leases.add_handlers(self._lease_changed,
                                 lambda old, new: self._lease_changed(new))
        self.pods = self.informer(PODS)
        self.pods.add_index("node", BY_NODE)
        self.pods.add_handlers(self._pod_changed, lambda old, new: self._pod_changed(new))

    # --- hearing from nodes -----------------------------------------------------------------

    def _hear(self, name: str, token: Any) -> bool:
        """Record `token` (a renewTime or heartbeat) from node `name`; whether it was news."""
        previous = self._heard.get(name)
        if previous is not None and previous[0] == token:
            return False
        self._heard[name] = (token, time.monotonic())
        return previous is not None

    def _node_changed(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        ready = condition(node, "Ready") or {}
        self._hear(name, ("status", ready.get("lastHeartbeatTime")))
        self.enqueue(name)

    def _node_deleted(self, node: dict[str, Any]) -> None:
        self._heard.pop(node["metadata"]["name"], None)

    def _lease_changed(self, lease: dict[str, Any]) -> None:
        name = lease["metadata"]["name"]
        if self._hear(name, ("lease", (lease.get("spec") or {}).get("renewTime"))):
            node = self.nodes.get(name)
            # a healthy node needs no reconcile per heartbeat; a recovering one does
            if node is not None and (condition(node, "Ready") or {}).get("status") != "True":
                self.enqueue(name)

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and not pod["metadata"].get("deletionTimestamp"):
            node_obj = self.nodes.get(node)
            if node_obj is not None and self._no_execute(node_obj):
                self.enqueue(node)

    @staticmethod
    def _no_execute(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [t for t in (node.get("spec") or {}).get("taints") or []
                if t.get("effect") == "NoExecute"]

    # --- reconciling ------------------------------------------------------------------------

    async def reconcile(self, name: str) -> float | None:
        node = self.nodes.get(name)
        if node is None:
            return None
        grace = self.settings.node_monitor_grace
        now = time.monotonic()
        if name not in self._heard:
            self._heard[name] = (None, now)
        silent_for = now - self._heard[name][1]
        recheck: float | None = None
        if silent_for >= grace:
            node = await self._mark_unknown(node)
        else:
            recheck = grace - silent_for + 0.05
        ready = (condition(node, "Ready") or {}).get("status")
        node = await self._taint(node, ready)
        if ready != "True":
            await self._mark_pods_not_ready(name)
        evict_after = await self._evict(node)
        if evict_after is not None:
            recheck = evict_after if recheck is None else min(recheck, evict_after)
        return recheck

    async def _mark_unknown(self, node: dict[str, Any]) -> dict[str, Any]:
        now = timestamps.now()
        conditions, changed = [], False
        seen = set()
        for item in _conditions(node):
            seen.add(item.get("type"))
            if item.get("status") == "Unknown" and item.get("reason") in (
                    "NodeStatusUnknown", "NodeStatusNeverUpdated"):
                conditions.append(item)
                continue
            changed = True
            conditions.append({**item, "status": "Unknown", "reason": "NodeStatusUnknown",
                               "message": UNKNOWN_MESSAGE, "lastTransitionTime": now})
        for kind in NODE_CONDITIONS:
            if kind not in seen:
                changed = True
                conditions.append({"type": kind, "status": "Unknown",
                                   "reason": "NodeStatusNeverUpdated",
                                   "message": "Kubelet never posted node status.",
                                   "lastHeartbeatTime": node["metadata"].get(
                                       "creationTimestamp"), "lastTransitionTime": now})
        if not changed:
            return node
        status = {**(node.get("status") or {}), "conditions": conditions}
        return await self.client.update_status(NODES, {**node, "status": status})

    def _wanted_taints(self, node: dict[str, Any], ready: str | None) -> list[tuple[str, str]]:
        wanted = []
        if ready == "Unknown":
            wanted += [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]
        elif ready == "False":
            wanted += [(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]
        for kind, (status, key) in CONDITION_TAINTS.items():
            if (condition(node, kind) or {}).get("status") == status:
                wanted.append((key, "NoSchedule"))
        if (node.get("spec") or {}).get("unschedulable"):
            wanted.append((UNSCHEDULABLE, "NoSchedule"))
        return wanted

    async def _taint(self, node: dict[str, Any], ready: str | None) -> dict[str, Any]:
        current = (node.get("spec") or {}).get("taints") or []
        wanted = self._wanted_taints(node, ready)
        kept = [t for t in current if t.get("key") not in OWNED_TAINTS
                or (t.get("key"), t.get("effect")) in wanted]
        have = {(t.get("key"), t.get("effect")) for t in kept}
        added = [{"key": key, "effect": effect, "timeAdded": timestamps.now()}
                 for key, effect in wanted if (key, effect) not in have]
        taints = kept + added
        if taints == current:
            return node
        spec = {**(node.get("spec") or {}), "taints": taints}
        if not taints:
            spec.pop("taints")
        return await self.client.update(NODES, {**node, "spec": spec})

    async def _mark_pods_not_ready(self, name: str) -> None:
        for pod in self.pods.by_index("node", name):
            if not is_pod_ready(pod):
                continue
            now = timestamps.now()
            conditions = [{**c, "status": "False", "lastTransitionTime": now}
                          if c.get("type") == "Ready" else c for c in _conditions(pod)]
            try:
                await self.client.update_status(
                    PODS, {**pod, "status": {**pod["status"], "conditions": conditions}})
            except (errors.NotFound, errors.Conflict):
                continue  # gone, or changed: the next reconcile looks again

    async def _evict(self, node: dict[str, Any]) -> float | None:
        """Delete the pods whose time on this node is up; seconds until the next one."""
        taints = self._no_execute(node)
        if not taints:
            return None
        now = time.time()
        soonest = None
        for pod in self.pods.by_index("node", node["metadata"]["name"]):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            delay = eviction_delay(pod, taints, now)
            if delay is None:
                continue
            if delay > 0:
                soonest = delay if soonest is None else min(soonest, delay)
                continue
            await self._delete(pod)
        return soonest

    async def _delete(self, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        conditions = [c for c in _conditions(pod) if c.get("type") != "DisruptionTarget"]
        conditions.append({"type": "DisruptionTarget", "status": "True",
                           "reason": "DeletionByTaintManager",
                           "message": "Taint manager: deleting due to NoExecute taint",
                           "lastTransitionTime": timestamps.now(), "lastProbeTime": None})
        try:
            await self.client.patch(PODS, metadata["name"], {
                "metadata": {"uid": metadata["uid"]},
                "status": {"conditions": conditions}},
                metadata["namespace"], subresource="status")
            await self.client.delete(PODS, metadata["name"], metadata["namespace"],
                                     preconditions={"uid": metadata["uid"]})
        except (errors.NotFound, errors.Conflict):
            pass
