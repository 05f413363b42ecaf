"""The garbage collector against a real API server, driven by kubectl: background, foreground
and orphan cascading deletes of a ReplicaSet, and owners that vanish under dependents."""

from __future__ import annotations

import json

from k8py.api import errors
from k8py.api.resources import builtin
from tests.conftest import eventually

PODS = builtin("v1", "pods")
REPLICASETS = builtin("apps/v1", "replicasets")
CONFIGMAPS = builtin("v1", "configmaps")


def replicaset(name: str, replicas: int = 2, pod_finalizers: list[str] | None = None) -> str:
    template_meta = {"labels": {"app": name}}
    if pod_finalizers:
        template_meta["finalizers"] = pod_finalizers
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": template_meta, "spec": {
                     "containers": [{"name": "c", "image": "busybox"}]}}},
    })


async def pods_of(cluster, app: str) -> list[dict]:
    return (await cluster.client.list(PODS, "default", label_selector=f"app={app}"))["items"]


async def running_pods(cluster, app: str, count: int) -> list[dict]:
    async def check():
        pods = await pods_of(cluster, app)
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        return running if len(running) == count else None
    return await eventually(check, 10, what=f"{count} running pods of {app}")


async def gone(client, resource, name, namespace=None) -> bool:
    try:
        await client.get(resource, name, namespace)
    except errors.NotFound:
        return True
    return False


async def test_background_delete_removes_pods_afterwards(cluster):
    await cluster.akubectl("apply", "-f", "-", input=replicaset("bg"))
    await running_pods(cluster, "bg", 2)
    await cluster.akubectl("delete", "rs", "bg")
    assert await gone(cluster.client, REPLICASETS, "bg", "default")
    await eventually(lambda: _none(pods_of(cluster, "bg")), 10, what="pods collected")


async def _none(coroutine) -> bool:
    return not await coroutine


async def test_foreground_delete_waits_for_dependents(cluster):
    await cluster.akubectl("apply", "-f", "-",
                           input=replicaset("fg", pod_finalizers=["example.com/hold"]))
    pods = await running_pods(cluster, "fg", 2)
    await cluster.akubectl("delete", "rs", "fg", "--cascade=foreground", "--wait=false")

    async def pods_terminating():
        current = await pods_of(cluster, "fg")
        return len(current) == 2 and all(p["metadata"].get("deletionTimestamp")
                                         for p in current)
    await eventually(pods_terminating, 10, what="dependents deleted by the collector")
    owner = await cluster.client.get(REPLICASETS, "fg", "default")
    assert owner["metadata"]["deletionTimestamp"]
    assert "foregroundDeletion" in owner["metadata"]["finalizers"]

    # The first pod going is not enough: the other one still blocks its owner.
    await cluster.akubectl("patch", "pod", pods[0]["metadata"]["name"], "--type=merge",
                           "-p", '{"metadata":{"finalizers":null}}')
    await eventually(lambda: gone(cluster.client, PODS, pods[0]["metadata"]["name"],
                                  "default"), 10)
    assert not await gone(cluster.client, REPLICASETS, "fg", "default")

    await cluster.akubectl("patch", "pod", pods[1]["metadata"]["name"], "--type=merge",
                           "-p", '{"metadata":{"finalizers":null}}')
    await eventually(lambda: gone(cluster.client, REPLICASETS, "fg", "default"), 10,
                     what="owner deleted once its dependents are gone")
    proc = await cluster.akubectl("get", "rs", "fg", check=False)
    assert "NotFound" in proc.stderr


async def test_orphan_delete_keeps_pods_without_owner(cluster):
    await cluster.akubectl("apply", "-f", "-", input=replicaset("or"))
    await running_pods(cluster, "or", 2)
    await cluster.akubectl("delete", "rs", "or", "--cascade=orphan")
    assert await gone(cluster.client, REPLICASETS, "or", "default")
    pods = await pods_of(cluster, "or")
    assert len(pods) == 2
    for pod in pods:
        assert not pod["metadata"].get("ownerReferences")
        assert not pod["metadata"].get("deletionTimestamp")


def _owner_ref(obj: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"]}


async def test_dependent_of_two_owners_loses_one_reference_then_goes(cluster):
    client = cluster.client
    first = await client.create(CONFIGMAPS, {"metadata": {"name": "first"}}, "default")
    second = await client.create(CONFIGMAPS, {"metadata": {"name": "second"}}, "default")
    await client.create(CONFIGMAPS, {"metadata": {
        "name": "dependent", "ownerReferences": [_owner_ref(first), _owner_ref(second)]}},
        "default")
    await client.delete(CONFIGMAPS, "first", "default")

    async def one_reference_left():
        refs = (await client.get(CONFIGMAPS, "dependent", "default"))["metadata"].get(
            "ownerReferences")
        return [r["uid"] for r in refs] == [second["metadata"]["uid"]]
    await eventually(one_reference_left, 10, what="dangling reference removed")

    await client.delete(CONFIGMAPS, "second", "default")
    await eventually(lambda: gone(client, CONFIGMAPS, "dependent", "default"), 10)


async def test_dependent_of_an_owner_that_never_existed_is_deleted(cluster):
    client = cluster.client
    await client.create(CONFIGMAPS, {"metadata": {"name": "keep"}}, "default")
    await client.create(CONFIGMAPS, {"metadata": {"name": "stray", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "ghost",
         "uid": "00000000-0000-0000-0000-000000000001"}]}}, "default")
    # A reference to a kind this collector cannot look up is left alone.
    await client.create(CONFIGMAPS, {"metadata": {"name": "custom-owned", "ownerReferences": [
        {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w",
         "uid": "00000000-0000-0000-0000-000000000002"}]}}, "default")
    await eventually(lambda: gone(client, CONFIGMAPS, "stray", "default"), 10)
    assert not await gone(client, CONFIGMAPS, "keep", "default")
    assert not await gone(client, CONFIGMAPS, "custom-owned", "default")


async def test_cluster_scoped_dependent_of_a_namespaced_kind_is_deleted(cluster):
    client = cluster.client
    owner = await client.create(CONFIGMAPS, {"metadata": {"name": "owner"}}, "default")
    clusterroles = builtin("rbac.authorization.k8s.io/v1", "clusterroles")
    await client.create(clusterroles, {"metadata": {"name": "owned-by-a-configmap",
                                                    "ownerReferences": [_owner_ref(owner)]}})
    await eventually(lambda: gone(client, clusterroles, "owned-by-a-configmap"), 10,
                     what="invalid reference treated as absent")
    assert not await gone(client, CONFIGMAPS, "owner", "default")
