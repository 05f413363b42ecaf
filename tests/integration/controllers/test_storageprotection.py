"""Storage object in-use protection against a real API server, the scheduler, the controllers
and simulated nodes: new claims and volumes get upstream's finalizers; a deleted claim stays
(Terminating) while a pod bound to a node uses it, finished or not, and goes with the pod; a
deleted volume stays while Bound and goes once its claim is; a claim or volume made without
the finalizer gets it; a namespace holding a used claim is still deleted."""

from __future__ import annotations

from k8py.api import errors
from k8py.api.resources import builtin
from tests.conftest import eventually
from tests.integration.controllers.test_persistentvolumes import (CLAIMS, PODS, VOLUMES,
                                                                  claim, pod, volume)

NAMESPACES = builtin("v1", "namespaces")
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"


async def gone(client, resource, name, namespace=None) -> bool:
    try:
        await client.get(resource, name, namespace)
    except errors.NotFound:
        return True
    return False


async def finalizers(client, resource, name, namespace=None) -> list[str]:
    return (await client.get(resource, name, namespace))["metadata"].get("finalizers") or []


async def test_claim_in_use_stays_until_its_pods_are_deleted(cluster):
    client = cluster.client
    created = await client.create(CLAIMS, claim("data"), "default")
    assert created["metadata"]["finalizers"] == [PVC_PROTECTION]
    await client.create(PODS, pod("user", "data"), "default")
    finished = pod("finished", "data")
    finished["metadata"]["annotations"] = {"k8py.io/simulate-exit-code": "0",
                                           "k8py.io/simulate-run-seconds": "0"}
    await client.create(PODS, finished, "default")

    async def phases():
        return [((await client.get(PODS, name, "default")).get("status") or {}).get("phase")
                for name in ("user", "finished")]

    async def settled():
        return await phases() == ["Running", "Succeeded"]
    await eventually(settled, timeout=15, what="one pod running, one finished")

    await client.delete(CLAIMS, "data", "default")
    terminating = await client.get(CLAIMS, "data", "default")
    assert terminating["metadata"]["deletionTimestamp"]
    assert terminating["metadata"]["finalizers"] == [PVC_PROTECTION]
    # kubectl's view: Terminating while a pod uses it
    table = (await cluster.akubectl("get", "pvc", "data")).stdout
    assert table.split("\n")[0].split() == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS",
                                            "MODES", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS",
                                            "AGE"]
    assert table.split("\n")[1].split()[:6] == [
        "data", "Terminating", f"pvc-{created['metadata']['uid']}", "1Gi", "RWO", "local-path"]

    await client.delete(PODS, "user", "default")
    await eventually(lambda: gone(client, PODS, "user", "default"), timeout=15,
                     what="the running pod gone")
    # a finished pod still holds it, as upstream's
    assert not await gone(client, CLAIMS, "data", "default")
    await client.delete(PODS, "finished", "default")
    await eventually(lambda: gone(client, CLAIMS, "data", "default"), timeout=15,
                     what="the claim gone with its last pod")


async def test_unused_claim_goes_at_once_and_a_missing_finalizer_is_added(cluster):
    client = cluster.client
    await client.create(CLAIMS, claim("spare"), "default")
    await client.delete(CLAIMS, "spare", "default")
    await eventually(lambda: gone(client, CLAIMS, "spare", "default"), timeout=10,
                     what="an unused claim deleted")

    # a finalizer removed by hand (as from an object made before the plugin) comes back
    await client.create(CLAIMS, claim("old"), "default")
    await client.patch(CLAIMS, "old", {"metadata": {"finalizers": None}}, "default")

    async def protected():
        return await finalizers(client, CLAIMS, "old", "default") == [PVC_PROTECTION]
    await eventually(protected, timeout=10, what="the finalizer added back")


async def test_bound_volume_stays_until_its_claim_is_gone(cluster):
    client = cluster.client
    created = await client.create(VOLUMES, volume("vol", "1Gi"))
    assert created["metadata"]["finalizers"] == [PV_PROTECTION]
    await client.create(CLAIMS, claim("bound", storageClassName="", volumeName="vol"),
                        "default")

    async def bound():
        return ((await client.get(VOLUMES, "vol")).get("status") or {}).get("phase") == "Bound"
    await eventually(bound, timeout=10, what="volume bound")
    await client.delete(VOLUMES, "vol")
    current = await client.get(VOLUMES, "vol")
    assert current["metadata"]["deletionTimestamp"] and \
        current["metadata"]["finalizers"] == [PV_PROTECTION]

    await client.delete(CLAIMS, "bound", "default")  # Retain: Released, then let go
    await eventually(lambda: gone(client, VOLUMES, "vol"), timeout=15,
                     what="the volume gone once released")


async def test_namespace_with_a_used_claim_is_deleted(cluster):
    client = cluster.client
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": "doomed"}})
    await client.create(CLAIMS, {**claim("data"), "metadata": {"name": "data",
                                                               "namespace": "doomed"}},
                        "doomed")
    user = pod("user", "data")
    user["metadata"]["namespace"] = "doomed"
    await client.create(PODS, user, "doomed")

    async def bound():
        current = await client.get(CLAIMS, "data", "doomed")
        return (current.get("status") or {}).get("phase") == "Bound"
    await eventually(bound, timeout=15, what="the claim bound")
    await client.delete(NAMESPACES, "doomed")
    await eventually(lambda: gone(client, NAMESPACES, "doomed"), timeout=30,
                     what="the namespace gone")
