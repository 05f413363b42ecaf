"""The pod subresources the control plane serves: `binding` and `eviction`.

binding (POST pods/NAME/binding, a v1 Binding): what the scheduler does to place a pod. It
sets `spec.nodeName` once, with compare-and-swap, and the `PodScheduled` condition; binding
a pod that is already bound is a 409, as upstream ("pod x is already assigned to node y").

eviction (POST pods/NAME/eviction, a policy/v1 Eviction): a delete that honours
PodDisruptionBudgets. Every budget in the pod's namespace whose selector matches the pod must
allow a disruption (`status.disruptionsAllowed` > 0, kept by the disruption controller); the
eviction then spends one (decrementing it and recording the pod in `disruptedPods`, with
compare-and-swap) and deletes the pod gracefully. Otherwise it is a 429 TooManyRequests with
upstream's message, and the pod stays. A pod that is not running yet (Pending) or is done
(Succeeded/Failed) can always be evicted, as upstream.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors, timestamps
from k8py.api.resources import Resource
from k8py.api.selectors import selector_matches
from k8py.server.apiserver.storage import ObjectStore, guaranteed

PDB_VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    # policy/v1: a null selector matches no pod, an empty one every pod
    return selector is not None and selector_matches(selector, labels)


async def bind(objects: ObjectStore, pods: Resource, namespace: str, name: str,
               binding: Any) -> dict[str, Any]:
    if not isinstance(binding, dict) or not isinstance(binding.get("target"), dict):
        raise errors.BadRequest("the body must be a v1 Binding with a target")
    node = binding["target"].get("name")
    if not node or not isinstance(node, str):
        raise errors.invalid("Binding", name, [("target.name", "FieldValueRequired",
                                                "Required value")])
    return await guaranteed(lambda: _bind_once(objects, pods, namespace, name, node))


async def _bind_once(objects: ObjectStore, pods: Resource, namespace: str, name: str,
                     node: str) -> dict[str, Any]:
    pod = await objects.get(pods, namespace, name)
    current = (pod.get("spec") or {}).get("nodeName")
    if current:
        raise errors.Conflict(f"Operation cannot be fulfilled on pods/binding \"{name}\": pod "
                              f"{name} is already assigned to node \"{current}\"",
                              name=name, kind="pods/binding")
    if pod["metadata"].get("deletionTimestamp"):
        raise errors.Conflict(f"pod {name} is being deleted, cannot be assigned to a host")
    status = dict(pod.get("status") or {})
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    conditions.append({"type": "PodScheduled", "status": "True",
                       "lastTransitionTime": timestamps.now(), "lastProbeTime": None})
    status["conditions"] = conditions
    bound = {**pod, "spec": {**pod["spec"], "nodeName": node}, "status": status}
    await objects.update(pods, bound, int(pod["metadata"]["resourceVersion"]))
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}


async def evict(objects: ObjectStore, pods: Resource, budgets: Resource, namespace: str,
                name: str, delete) -> dict[str, Any]:
    """Spend a disruption from every matching budget, then delete the pod with `delete`.
    A budget changed by someone else meanwhile (a concurrent eviction, the disruption
    controller) is read again and the check redone, as upstream retries on conflict."""
    return await guaranteed(lambda: _evict_once(objects, pods, budgets, namespace, name,
                                                delete))


async def _evict_once(objects: ObjectStore, pods: Resource, budgets: Resource, namespace: str,
                      name: str, delete) -> dict[str, Any]:
    pod = await objects.get(pods, namespace, name)
    phase = (pod.get("status") or {}).get("phase", "Pending")
    if phase not in ("Pending", "Succeeded", "Failed") and not pod["metadata"].get(
            "deletionTimestamp"):
        labels = pod["metadata"].get("labels") or {}
        items, _, _ = await objects.list(budgets, namespace)
        matching = [b for b in items
                    if _selects((b.get("spec") or {}).get("selector"), labels)]
        if len(matching) > 1:
            raise errors.InternalError("This pod has more than one PodDisruptionBudget, "
                                       "which the eviction subresource does not support.")
        for budget in matching:
            status = dict(budget.get("status") or {})
            budget_name = budget["metadata"]["name"]
            if status.get("observedGeneration", 0) < budget["metadata"].get("generation", 1):
                # upstream suggests 10 s here (a Retry-After client-go honours)
                raise errors.TooManyRequests(PDB_VIOLATION, retry_after=10, causes=[{
                    "reason": "DisruptionBudget",
                    "message": f"The disruption budget {budget_name} is still being "
                               "processed by the server."}])
            if status.get("disruptionsAllowed", 0) <= 0:
                # no Retry-After: the client (kubectl drain) sees it and retries itself
                raise errors.TooManyRequests(PDB_VIOLATION, causes=[{
                    "reason": "DisruptionBudget",
                    "message": f"The disruption budget {budget_name} needs "
                               f"{status.get('desiredHealthy', 0)} healthy pods and has "
                               f"{status.get('currentHealthy', 0)} currently"}])
            status["disruptionsAllowed"] -= 1
            status["disruptedPods"] = {**(status.get("disruptedPods") or {}),
                                       name: timestamps.now()}
            await objects.update(budgets, {**budget, "status": status},
                                 int(budget["metadata"]["resourceVersion"]))
    await delete(pod)
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}
