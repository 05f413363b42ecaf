"""PodDisruptionBudget status (upstream's disruption controller), which the eviction
subresource (`k8py.server.apiserver.podsubresources`) spends.

Per budget, over the pods of its namespace its selector matches (a null selector matches
none, an empty one all):
- expectedPods and desiredHealthy: with an integer `minAvailable`, the matching pod count and
  that number; with a percentage `minAvailable`, or with `maxUnavailable`, the expected count
  is the summed scale of the pods' controllers (ReplicaSet, Deployment through its
  ReplicaSets, StatefulSet, ReplicationController; for another kind, the number of its
  pods), and the percentage is rounded up; desiredHealthy = expected - maxUnavailable (>= 0).
  Pods without a controller are not counted there, as upstream.
- currentHealthy: matching pods that are Ready and neither being deleted nor recently evicted;
- disruptedPods: pods the eviction subresource spent a disruption on, kept until the pod is
  gone or being deleted, or for 2 minutes (upstream's DeletionTimeout), after which the
  budget is looked at again;
- disruptionsAllowed = currentHealthy - desiredHealthy, 0 if that is negative or nothing is
  expected; the `DisruptionAllowed` condition says SufficientPods (True) or InsufficientPods
  (False); `observedGeneration` tells the eviction subresource the status is current.
The status is written only when it changes.
"""

from __future__ import annotations

import math
import time
from typing import Any

from k8py.api import selectors, timestamps
from k8py.api.resources import builtin
from k8py.client.informer import by_owner_uid
from k8py.server.controllers.base import Controller, controller_of, is_pod_ready

BUDGETS = builtin("policy/v1", "poddisruptionbudgets")
PODS = builtin("v1", "pods")
SCALED = {  # controller kind → resource whose spec.replicas is its scale
    "ReplicaSet": builtin("apps/v1", "replicasets"),
    "Deployment": builtin("apps/v1", "deployments"),
    "StatefulSet": builtin("apps/v1", "statefulsets"),
    "ReplicationController": builtin("v1", "replicationcontrollers"),
}
DELETION_TIMEOUT = 120.0


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """Upstream's intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = int(value[:-1])
        except ValueError:
            raise ValueError(f"invalid value for IntOrString: invalid value {value!r}") from None
        scaled = percent * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise ValueError(f"invalid value for IntOrString: invalid type: string is not a "
                     f"percentage: {value!r}")


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    return selector is not None and selectors.selector_matches(selector, labels)


class DisruptionController(Controller):
    name = "disruption"
    service_account = "disruption-controller"
    workers = 2

    def setup(self) -> None:
        self.budgets = self.informer(BUDGETS)
        self.budgets.add_handlers(self.enqueue_object, lambda old, new: self.enqueue_object(new))
        self.pods = self.informer(PODS)
        self.pods.add_handlers(self._pod_changed, self._pod_updated, self._pod_changed)
        self.scaled = {kind: self.informer(resource) for kind, resource in SCALED.items()}
        self.scaled["ReplicaSet"].add_index("owner", by_owner_uid)

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        labels = pod["metadata"].get("labels") or {}
        for budget in self.budgets.list(pod["metadata"]["namespace"]):
            if _selects((budget.get("spec") or {}).get("selector"), labels):
                self.enqueue_object(budget)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._pod_changed(new)
        if old["metadata"].get("labels") != new["metadata"].get("labels"):
            self._pod_changed(old)

    # --- counting ---------------------------------------------------------------------------

    def _expected_scale(self, pods: list[dict[str, Any]]) -> int:
        """The summed scale of the pods' controllers (upstream's getExpectedScale)."""
        scales: dict[str, int] = {}
        for pod in pods:
            owner = controller_of(pod)
            if owner is None or owner["uid"] in scales:
                continue
            namespace = pod["metadata"]["namespace"]
            kind, uid = owner.get("kind"), owner["uid"]
            obj = None
            if kind in self.scaled:
                obj = self.scaled[kind].get_by_name(namespace, owner["name"])
            if obj is not None and obj["metadata"]["uid"] == uid:
                if kind == "ReplicaSet":
                    parent = controller_of(obj)
                    if parent is not None and parent.get("kind") == "Deployment":
                        deployment = self.scaled["Deployment"].get_by_name(namespace,
                                                                           parent["name"])
                        if deployment is not None:
                            # a deployment counts once, however many sets it has
                            scales[deployment["metadata"]["uid"]] = \
                                (deployment.get("spec") or {}).get("replicas", 1)
                            scales[uid] = 0
                            continue
                scales[uid] = (obj.get("spec") or {}).get("replicas", 1)
            else:
                scales[uid] = sum(1 for p in pods if (controller_of(p) or {}).get("uid") == uid)
        return sum(scales.values())

    def _expected(self, budget: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[int, int]:
        """(expectedCount, desiredHealthy)."""
        spec = budget.get("spec") or {}
        if spec.get("maxUnavailable") is not None:
            expected = self._expected_scale(pods)
            unavailable = scaled_value(spec["maxUnavailable"], expected, True)
            return expected, max(0, expected - unavailable)
        minimum = spec.get("minAvailable")
        if isinstance(minimum, int) and not isinstance(minimum, bool):
            return len(pods), minimum
        if isinstance(minimum, str):
            expected = self._expected_scale(pods)
            return expected, scaled_value(minimum, expected, True)
        return len(pods), 0

    # --- reconciling ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        budget = self.budgets.get(key)
        if budget is None:
            return None
        namespace = budget["metadata"]["namespace"]
        selector = (budget.get("spec") or {}).get("selector")
        pods = [p for p in self.pods.list(namespace)
                if _selects(selector, p["metadata"].get("labels") or {})]
        old = budget.get("status") or {}
        try:
            expected, desired = self._expected(budget, pods)
        except ValueError as exc:
            await self._write(budget, {**old, "observedGeneration":
                                       budget["metadata"].get("generation", 1)},
                              "SyncFailed", str(exc))
            return None
        now = time.time()
        by_name = {p["metadata"]["name"]: p for p in pods}
        disrupted: dict[str, str] = {}
        recheck = None
        for name, when in (old.get("disruptedPods") or {}).items():
            pod = by_name.get(name)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                continue
            expires = (timestamps.parse(when) or now) + DELETION_TIMEOUT
            if expires <= now:
                continue
            disrupted[name] = when
            recheck = expires - now if recheck is None else min(recheck, expires - now)
        healthy = sum(1 for p in pods if not p["metadata"].get("deletionTimestamp")
                      and p["metadata"]["name"] not in disrupted and is_pod_ready(p))
        allowed = healthy - desired
        if expected <= 0 or allowed <= 0:
            allowed = 0
        status = {"currentHealthy": healthy, "desiredHealthy": desired,
                  "expectedPods": expected, "disruptionsAllowed": allowed,
                  "observedGeneration": budget["metadata"].get("generation", 1)}
        if disrupted:
            status["disruptedPods"] = disrupted
        if old.get("conditions"):
            status["conditions"] = old["conditions"]
        reason = "SufficientPods" if allowed > 0 else "InsufficientPods"
        await self._write(budget, status, reason, "")
        return recheck

    async def _write(self, budget: dict[str, Any], status: dict[str, Any], reason: str,
                     message: str) -> None:
        generation = budget["metadata"].get("generation", 1)
        wanted = {"type": "DisruptionAllowed", "status":
                  "True" if reason == "SufficientPods" else "False",
                  "reason": reason, "message": message, "observedGeneration": generation}
        conditions = [dict(c) for c in status.get("conditions") or []]
        current = next((c for c in conditions if c.get("type") == "DisruptionAllowed"), None)
        if current is None:
            conditions.append({**wanted, "lastTransitionTime": timestamps.now()})
        else:
            if current.get("status") != wanted["status"]:
                current["lastTransitionTime"] = timestamps.now()
            current.update(wanted)
        status = {**status, "conditions": conditions}
        if status == (budget.get("status") or {}):
            return
        await self.client.update_status(BUDGETS, {**budget, "status": status})

