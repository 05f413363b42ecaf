"""A workload in a namespace that enforces a Pod Security level: the workload is stored (it is
only warned about), its controller's pods are refused, and the controller says why in a
FailedCreate Event, as upstream's ReplicaSet controller does; compliant pods are made."""

from __future__ import annotations

from k8py.api.resources import builtin
from tests.conftest import eventually

EVENTS = builtin("v1", "events")
NAMESPACES = builtin("v1", "namespaces")
PODS = builtin("v1", "pods")
REPLICASETS = builtin("apps/v1", "replicasets")


def replicaset(name: str, security: dict | None = None) -> dict:
    container = {"name": "c", "image": "busybox"}
    if security:
        container["securityContext"] = security
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [container]}}}}


async def test_controllers_pods_are_enforced(cluster):
    client = cluster.client
    await client.create(NAMESPACES, {"metadata": {"name": "strict", "labels": {
        "pod-security.kubernetes.io/enforce": "baseline"}}})
    await client.create(REPLICASETS, replicaset("priv", {"privileged": True}), "strict")
    await client.create(REPLICASETS, replicaset("plain"), "strict")

    async def failed_create():
        events = (await client.list(EVENTS, "strict"))["items"]
        return [e for e in events if e["reason"] == "FailedCreate"
                and e["involvedObject"]["name"] == "priv"]

    found = (await eventually(failed_create, timeout=10, what="a FailedCreate event"))[0]
    assert found["type"] == "Warning"
    assert found["message"].startswith('Error creating: pods "priv-')
    assert found["message"].endswith(
        'is forbidden: violates PodSecurity "baseline:latest": privileged (container "c" must '
        "not set securityContext.privileged=true)")

    async def plain_pod():
        return (await client.list(PODS, "strict", label_selector="app=plain"))["items"]

    await eventually(plain_pod, timeout=10, what="the compliant ReplicaSet's pod")
    assert (await client.list(PODS, "strict", label_selector="app=priv"))["items"] == []
