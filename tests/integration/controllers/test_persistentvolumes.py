"""Persistent volumes against a real API server, the scheduler, the controllers and simulated
nodes: the default `local-path` class, provisioning on the scheduler's node, static binding by
class, access modes and capacity, `volumeName` pre-binding, upstream's Events, Retain and
Delete reclaim (the node's reclaimer removing the directory), the kubelet's view of a claim,
and a StatefulSet's claims deleted on scale-down."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from k8py.agent.localvolumes import LocalVolumeReclaimer, claim_source
from k8py.api.resources import builtin
from k8py.server.controllers.base import Settings
from tests.conftest import eventually
from tests.integration.controllers.conftest import start_control_plane

CLAIMS = builtin("v1", "persistentvolumeclaims")
VOLUMES = builtin("v1", "persistentvolumes")
PODS = builtin("v1", "pods")
EVENTS = builtin("v1", "events")
STATEFULSETS = builtin("apps/v1", "statefulsets")
CLASSES = builtin("storage.k8s.io/v1", "storageclasses")


@pytest.fixture
async def cluster(tmp_path):
    settings = Settings(storage_dir=str(tmp_path / "storage"))
    async with start_control_plane(tmp_path, nodes=2, settings=settings) as control_plane:
        yield control_plane


def claim(name: str, size: str = "1Gi", modes=("ReadWriteOnce",), **spec) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"accessModes": list(modes),
                     "resources": {"requests": {"storage": size}}, **spec}}


def volume(name: str, size: str, modes=("ReadWriteOnce",), policy="Retain", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": list(modes),
                     "persistentVolumeReclaimPolicy": policy, "storageClassName": "",
                     "hostPath": {"path": f"/tmp/{name}"}, **spec}}


def pod(name: str, claim_name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                     "volumes": [{"name": "data",
                                  "persistentVolumeClaim": {"claimName": claim_name}}]}}


async def phase(client, resource, name, namespace=None) -> str | None:
    obj = await client.get(resource, name, namespace)
    return (obj.get("status") or {}).get("phase")


async def event(client, name: str, reason: str) -> dict | None:
    for item in (await client.list(EVENTS, "default"))["items"]:
        if item["involvedObject"].get("name") == name and item["reason"] == reason:
            return item
    return None


async def test_local_path_class_is_default_and_provisions_on_the_pods_node(cluster, tmp_path):
    client = cluster.client
    storage_class = await client.get(CLASSES, "local-path")
    assert storage_class["provisioner"] == "rancher.io/local-path"
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    assert storage_class["reclaimPolicy"] == "Delete"
    assert storage_class["metadata"]["annotations"][
        "storageclass.kubernetes.io/is-default-class"] == "true"

    created = await client.create(CLAIMS, claim("data"), "default")
    assert created["spec"]["storageClassName"] == "local-path"  # DefaultStorageClass
    waiting = await eventually(lambda: event(client, "data", "WaitForFirstConsumer"),
                               what="WaitForFirstConsumer event")
    assert waiting["message"] == "waiting for first consumer to be created before binding"
    assert await phase(client, CLAIMS, "data", "default") == "Pending"

    await client.create(PODS, pod("user", "data"), "default")

    async def bound():
        current = await client.get(CLAIMS, "data", "default")
        return current if (current.get("status") or {}).get("phase") == "Bound" else None
    current = await eventually(bound, timeout=10, what="claim bound")
    node = (await client.get(PODS, "user", "default"))["spec"]["nodeName"]
    uid = created["metadata"]["uid"]
    assert current["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == node
    assert current["spec"]["volumeName"] == f"pvc-{uid}"
    pv = await client.get(VOLUMES, f"pvc-{uid}")
    assert pv["spec"]["hostPath"]["path"] == str(tmp_path / "storage" /
                                                 f"pvc-{uid}_default_data")
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
        "matchExpressions"][0]["values"] == [node]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert await phase(client, VOLUMES, f"pvc-{uid}") == "Bound"
    assert await event(client, "data", "ProvisioningSucceeded")

    # the kubelet of that node reads the claim and its volume and makes the directory 0777
    path, kind = await claim_source(cluster.nodes.as_node(node), "default", "data")
    assert path == pv["spec"]["hostPath"]["path"] and kind == "DirectoryOrCreate"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777

    # Delete reclaim: the node's reclaimer removes the directory, then the volume
    reclaimer = LocalVolumeReclaimer(cluster.nodes.as_node(node), node,
                                     str(tmp_path / "storage"))
    task = asyncio.create_task(reclaimer.run())
    try:
        await client.delete(PODS, "user", "default", grace_period=0)
        await client.delete(CLAIMS, "data", "default")

        async def gone():
            try:
                await client.get(VOLUMES, f"pvc-{uid}")
            except Exception:
                return True
            return False
        await eventually(gone, timeout=10, what="local-path volume deleted")
        assert not os.path.exists(path)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_static_binding_matches_class_access_modes_and_capacity(cluster):
    client = cluster.client
    for pv in (volume("small", "1Gi", ["ReadWriteMany"]), volume("rwo", "5Gi"),
               volume("big", "10Gi", ["ReadWriteMany"]),
               volume("fits", "3Gi", ["ReadWriteMany", "ReadWriteOnce"])):
        await client.create(VOLUMES, pv)
    await client.create(CLAIMS, claim("shared", "2Gi", ["ReadWriteMany"],
                                      storageClassName=""), "default")
    await eventually(lambda: phase(client, CLAIMS, "shared", "default"),
                     what="claim has a phase")

    async def bound():
        return await phase(client, CLAIMS, "shared", "default") == "Bound"
    await eventually(bound, timeout=10, what="claim bound")
    current = await client.get(CLAIMS, "shared", "default")
    assert current["spec"]["volumeName"] == "fits"
    assert current["status"]["capacity"] == {"storage": "3Gi"}
    assert current["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    fits = await client.get(VOLUMES, "fits")
    assert fits["spec"]["claimRef"]["uid"] == current["metadata"]["uid"]
    assert fits["status"]["phase"] == "Bound"
    for name in ("small", "rwo", "big"):
        assert await phase(client, VOLUMES, name) == "Available"

    await client.create(CLAIMS, claim("lonely", "50Gi", storageClassName=""), "default")
    failed = await eventually(lambda: event(client, "lonely", "FailedBinding"),
                              what="FailedBinding event")
    assert failed["message"] == ("no persistent volumes available for this claim and no "
                                 "storage class is set")
    assert await phase(client, CLAIMS, "lonely", "default") == "Pending"


async def test_missing_class_and_volume_name_prebinding(cluster):
    client = cluster.client
    await client.create(CLAIMS, claim("nope", storageClassName="gold"), "default")
    failed = await eventually(lambda: event(client, "nope", "ProvisioningFailed"),
                              what="ProvisioningFailed event")
    assert failed["type"] == "Warning"
    assert failed["message"] == 'storageclass.storage.k8s.io "gold" not found'

    # the claim names its volume
    await client.create(VOLUMES, volume("named", "2Gi"))
    await client.create(CLAIMS, claim("wants-named", storageClassName="",
                                      volumeName="named"), "default")
    # the volume names its claim: no other claim may take it
    reserved = volume("reserved", "2Gi")
    reserved["spec"]["claimRef"] = {"namespace": "default", "name": "later"}
    await client.create(VOLUMES, reserved)
    await client.create(CLAIMS, claim("other", storageClassName=""), "default")
    await client.create(CLAIMS, claim("later", storageClassName=""), "default")
    # a named volume that is too small
    await client.create(VOLUMES, volume("tiny", "100Mi"))
    await client.create(CLAIMS, claim("wants-tiny", storageClassName="", volumeName="tiny"),
                        "default")

    async def settled():
        return [await phase(client, CLAIMS, n, "default")
                for n in ("wants-named", "later")] == ["Bound", "Bound"]
    await eventually(settled, timeout=10, what="pre-bound claims bound")
    assert (await client.get(CLAIMS, "later", "default"))["spec"]["volumeName"] == "reserved"
    assert (await client.get(CLAIMS, "other", "default"))["spec"].get("volumeName") is None
    failed = await eventually(lambda: event(client, "wants-tiny", "FailedBinding"),
                              what="FailedBinding for the too small volume")
    assert failed["message"] == 'Cannot bind to requested volume "tiny": requested PV is too small'
    assert await phase(client, VOLUMES, "tiny") == "Available"


async def test_retain_keeps_a_released_volume_and_delete_without_plugin_fails(cluster):
    client = cluster.client
    await client.create(VOLUMES, volume("kept", "1Gi", policy="Retain"))
    await client.create(VOLUMES, volume("doomed", "1Gi", ["ReadWriteMany"], policy="Delete"))
    await client.create(CLAIMS, claim("a", storageClassName="", volumeName="kept"), "default")
    await client.create(CLAIMS, claim("b", storageClassName="", volumeName="doomed",
                                      modes=["ReadWriteMany"]), "default")

    async def both(value):
        return [await phase(client, VOLUMES, n) for n in ("kept", "doomed")] == value
    await eventually(lambda: both(["Bound", "Bound"]), timeout=10, what="both bound")
    await client.delete(CLAIMS, "a", "default")
    await client.delete(CLAIMS, "b", "default")
    await eventually(lambda: both(["Released", "Failed"]), timeout=10,
                     what="Retain released, Delete failed")
    failed = await eventually(lambda: event(client, "doomed", "VolumeFailedDelete"),
                              what="VolumeFailedDelete event")
    assert "no deletable volume plugin matched" in failed["message"]


async def test_statefulset_claims_provisioned_and_deleted_when_scaled_down(cluster):
    client = cluster.client
    await client.create(STATEFULSETS, {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"replicas": 2, "serviceName": "db", "podManagementPolicy": "Parallel",
                 "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete",
                                                          "whenDeleted": "Retain"},
                 "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "c", "image": "db:1"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}]}}, "default")

    async def all_bound():
        phases = [(c.get("status") or {}).get("phase")
                  for c in (await client.list(CLAIMS, "default"))["items"]]
        return phases == ["Bound", "Bound"]
    await eventually(all_bound, timeout=15, what="both claims bound")
    for ordinal in (0, 1):
        pvc = await client.get(CLAIMS, f"data-db-{ordinal}", "default")
        node = (await client.get(PODS, f"db-{ordinal}", "default"))["spec"]["nodeName"]
        pv = await client.get(VOLUMES, pvc["spec"]["volumeName"])
        assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
            "matchExpressions"][0]["values"] == [node]

    await client.patch(STATEFULSETS, "db", {"spec": {"replicas": 1}}, "default")

    async def claim_gone():
        names = [c["metadata"]["name"] for c in (await client.list(CLAIMS, "default"))["items"]]
        return names == ["data-db-0"]
    await eventually(claim_gone, timeout=15, what="data-db-1 deleted with its pod")
