"""PodDisruptionBudget status from the disruption controller, and evictions that honour it:
minAvailable and maxUnavailable (integers and percentages of the controllers' scale), the
DisruptionAllowed condition, and 429 once the budget is spent."""

from __future__ import annotations

import pytest

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.server.controllers.base import is_active_pod, is_pod_ready
from k8py.server.controllers.disruption import scaled_value
from tests.conftest import eventually

BUDGETS = builtin("policy/v1", "poddisruptionbudgets")
PODS = builtin("v1", "pods")
REPLICASETS = builtin("apps/v1", "replicasets")


def replicaset(name: str, replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "c", "image": "web:1"}]}}}}


def budget(name: str, **spec) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}}


def test_scaled_value():
    assert scaled_value(2, 10, True) == 2
    assert scaled_value("25%", 10, True) == 3
    assert scaled_value("25%", 10, False) == 2
    with pytest.raises(ValueError):
        scaled_value("abc", 10, True)


async def _status(client, name: str, **wanted):
    status = (await client.get(BUDGETS, name, "default")).get("status") or {}
    return status if all(status.get(k) == v for k, v in wanted.items()) else None


async def _running(client, count: int):
    pods = [p for p in (await client.list(PODS, "default", label_selector="app=web"))["items"]
            if is_active_pod(p) and is_pod_ready(p)]
    return pods if len(pods) == count else None


async def test_status_from_min_available_and_max_unavailable(cluster):
    client = cluster.client
    await client.create(REPLICASETS, replicaset("web", 4))
    await eventually(lambda: _running(client, 4), 10, what="4 ready pods")
    await client.create(BUDGETS, budget("min", minAvailable=3))
    status = await eventually(lambda: _status(client, "min", currentHealthy=4), 5,
                              what="minAvailable status")
    assert status["desiredHealthy"] == 3 and status["expectedPods"] == 4
    assert status["disruptionsAllowed"] == 1 and status["observedGeneration"] == 1
    condition = status["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "DisruptionAllowed", "True", "SufficientPods")

    await client.create(BUDGETS, {**budget("pct", maxUnavailable="50%"),
                                  "metadata": {"name": "pct", "namespace": "default"}})
    status = await eventually(lambda: _status(client, "pct", currentHealthy=4), 5,
                              what="maxUnavailable status")
    assert (status["expectedPods"], status["desiredHealthy"], status["disruptionsAllowed"]) \
        == (4, 2, 2)

    await client.patch(BUDGETS, "min", {"spec": {"minAvailable": "100%"}}, "default")
    status = await eventually(lambda: _status(client, "min", observedGeneration=2), 5,
                              what="new generation observed")
    assert status["desiredHealthy"] == 4 and status["disruptionsAllowed"] == 0
    condition = status["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "InsufficientPods")


async def test_eviction_honours_the_budget(cluster):
    client = cluster.client
    await client.create(REPLICASETS, replicaset("web", 3))
    pods = await eventually(lambda: _running(client, 3), 10, what="3 ready pods")
    await client.create(BUDGETS, budget("web", minAvailable=2))
    await eventually(lambda: _status(client, "web", disruptionsAllowed=1), 5,
                     what="one disruption allowed")

    def eviction(pod: dict) -> dict:
        return {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": pod["metadata"]["name"], "namespace": "default"}}

    names = [p["metadata"]["name"] for p in pods]
    await client.create_subresource(PODS, names[0], "default", "eviction", eviction(pods[0]))
    # the budget is spent until the replacement is ready
    with pytest.raises(errors.TooManyRequests):
        await client.create_subresource(PODS, names[1], "default", "eviction", eviction(pods[1]))
    await eventually(lambda: _status(client, "web", disruptionsAllowed=1, currentHealthy=3), 10,
                     what="the replacement restores the budget")
    await client.create_subresource(PODS, names[1], "default", "eviction", eviction(pods[1]))
    status = await eventually(lambda: _status(client, "web", disruptionsAllowed=1,
                                              currentHealthy=3), 10, what="restored again")
    assert not status.get("disruptedPods")

