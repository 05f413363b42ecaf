"""Placement on simulated nodes: taints, node affinity, pod (anti-)affinity, topology spread,
and pods that fit nowhere explaining why, then scheduling once the cluster changes."""

from __future__ import annotations

import asyncio

from k8py.api import errors
from k8py.api.resources import builtin
from tests.conftest import eventually

PODS = builtin("v1", "pods")
NODES = builtin("v1", "nodes")


def pod(name: str, labels=None, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


async def node_of(client, name: str, timeout: float = 10) -> str:
    async def bound():
        return (await client.get(PODS, name, "default"))["spec"].get("nodeName")
    return await eventually(bound, timeout, what=f"pod {name} bound")


async def unschedulable_message(client, name: str) -> str:
    async def message():
        current = await client.get(PODS, name, "default")
        for condition in (current.get("status") or {}).get("conditions") or []:
            if condition["type"] == "PodScheduled" and condition["status"] == "False":
                return condition["message"]
    return await eventually(message, 10, what=f"pod {name} marked unschedulable")


async def set_taints(client, node: str, taints: list) -> None:
    await client.patch(NODES, node, {"spec": {"taints": taints}})


async def label(client, node: str, labels: dict) -> None:
    await client.patch(NODES, node, {"metadata": {"labels": labels}})


GPU_TAINT = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


async def test_taints_keep_pods_off_unless_tolerated(cluster):
    client = cluster.client
    await set_taints(client, "sim-node-0", [GPU_TAINT])
    await set_taints(client, "sim-node-1", [GPU_TAINT])
    for i in range(4):
        await client.create(PODS, pod(f"plain-{i}"))
    for i in range(4):
        assert await node_of(client, f"plain-{i}") == "sim-node-2"
    toleration = [{"key": "dedicated", "operator": "Equal", "value": "gpu",
                   "effect": "NoSchedule"}]
    await client.create(PODS, pod("tolerant", tolerations=toleration,
                                  nodeSelector={"kubernetes.io/hostname": "sim-node-0"}))
    assert await node_of(client, "tolerant") == "sim-node-0"


async def test_unschedulable_pod_explains_and_is_retried(cluster):
    client = cluster.client
    await set_taints(client, "sim-node-0", [GPU_TAINT])
    big = pod("big")
    big["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "3"}}
    await client.create(PODS, pod("filler-1", nodeName="sim-node-1",
                                  containers=[{"name": "c", "image": "busybox",
                                               "resources": {"requests": {"cpu": "2"}}}]))
    await client.create(PODS, pod("filler-2", nodeName="sim-node-2",
                                  containers=[{"name": "c", "image": "busybox",
                                               "resources": {"requests": {"cpu": "2"}}}]))
    await client.create(PODS, big)
    message = await unschedulable_message(client, "big")
    assert message == ("0/3 nodes are available: 1 node(s) had untolerated taint "
                       "{dedicated: gpu}, 2 Insufficient cpu.")
    described = await cluster.akubectl("describe", "pod", "big")
    assert "FailedScheduling" in described.stdout
    assert "2 Insufficient cpu" in described.stdout
    # Making room schedules it, without anyone touching the pod.
    await client.delete(PODS, "filler-1", "default", grace_period=0)
    assert await node_of(client, "big") == "sim-node-1"


async def test_node_affinity_and_selector(cluster):
    client = cluster.client
    await label(client, "sim-node-1", {"disk": "ssd"})
    await label(client, "sim-node-2", {"disk": "hdd"})
    await client.create(PODS, pod("selected", nodeSelector={"disk": "ssd"}))
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "disk", "operator": "In", "values": ["hdd"]}]}]}}}
    await client.create(PODS, pod("affine", affinity=affinity))
    preferred = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [
            {"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}
    await client.create(PODS, pod("preferring", affinity=preferred))
    assert await node_of(client, "selected") == "sim-node-1"
    assert await node_of(client, "affine") == "sim-node-2"
    assert await node_of(client, "preferring") == "sim-node-1"
    await client.create(PODS, pod("nowhere", nodeSelector={"disk": "tape"}))
    assert await unschedulable_message(client, "nowhere") == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.")


async def test_pod_anti_affinity_spreads_and_affinity_joins(cluster):
    client = cluster.client
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}},
         "topologyKey": "kubernetes.io/hostname"}]}}
    for i in range(3):
        await client.create(PODS, pod(f"cache-{i}", {"app": "cache"}, affinity=anti))
    placed = {await node_of(client, f"cache-{i}") for i in range(3)}
    assert placed == {"sim-node-0", "sim-node-1", "sim-node-2"}
    await client.create(PODS, pod("cache-3", {"app": "cache"}, affinity=anti))
    message = await unschedulable_message(client, "cache-3")
    assert "3 node(s) didn't match pod anti-affinity rules" in message

    await client.create(PODS, pod("db", {"app": "db"}, nodeName="sim-node-2"))
    near = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}},
         "topologyKey": "kubernetes.io/hostname"}]}}
    await client.create(PODS, pod("next-to-db", affinity=near))
    assert await node_of(client, "next-to-db") == "sim-node-2"


async def test_topology_spread_over_zones(cluster):
    client = cluster.client
    zone = "topology.kubernetes.io/zone"
    await asyncio.gather(label(client, "sim-node-0", {zone: "a"}),
                         label(client, "sim-node-1", {zone: "a"}),
                         label(client, "sim-node-2", {zone: "b"}))
    spread = [{"maxSkew": 1, "topologyKey": zone, "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "web"}}}]
    zones = {"a": 0, "b": 0}
    for i in range(6):
        await client.create(PODS, pod(f"web-{i}", {"app": "web"},
                                      topologySpreadConstraints=spread))
        node = await node_of(client, f"web-{i}")
        zones["b" if node == "sim-node-2" else "a"] += 1
        assert abs(zones["a"] - zones["b"]) <= 1, zones
    assert zones == {"a": 3, "b": 3}


async def test_host_ports_conflict(cluster):
    client = cluster.client
    ports = [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80, "hostPort": 8080}]}]
    for i in range(3):
        await client.create(PODS, pod(f"hp-{i}", containers=ports))
    assert len({await node_of(client, f"hp-{i}") for i in range(3)}) == 3
    await client.create(PODS, pod("hp-3", containers=ports))
    assert await unschedulable_message(client, "hp-3") == (
        "0/3 nodes are available: 3 node(s) didn't have free ports for the requested pod "
        "ports.")


async def test_binding_twice_is_refused(cluster):
    client = cluster.client
    await client.create(PODS, pod("once"))
    node = await node_of(client, "once")
    try:
        await client.create_subresource(PODS, "once", "default", "binding", {
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "once"},
            "target": {"kind": "Node", "name": node}})
    except errors.Conflict:
        pass
    else:
        raise AssertionError("a second binding was accepted")
