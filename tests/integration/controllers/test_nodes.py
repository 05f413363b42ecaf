"""Nodes against a real API server, the scheduler and simulated nodes: pod CIDRs from node
IPAM, and the node lifecycle: a node that stops heartbeating becomes Ready=Unknown with the
unreachable taints, its pods not ready, and (with short toleration seconds) evicted and
replaced on the other nodes; the API server's default tolerations."""

from __future__ import annotations

import ipaddress

import pytest

from k8py.api.defaults import DEFAULT_TOLERATION_SECONDS
from k8py.api.resources import builtin
from k8py.server.controllers.base import Settings, is_active_pod, is_pod_ready
from k8py.server.controllers.nodelifecycle import eviction_delay
from tests.conftest import eventually
from tests.integration.controllers.conftest import start_control_plane

NODES = builtin("v1", "nodes")
PODS = builtin("v1", "pods")
REPLICASETS = builtin("apps/v1", "replicasets")
UNREACHABLE = "node.kubernetes.io/unreachable"


@pytest.fixture
async def cluster(tmp_path):
    """Nodes are unhealthy 2 s after their last heartbeat, not 40 s."""
    async with start_control_plane(tmp_path, settings=Settings(node_monitor_grace=2)) as plane:
        yield plane


async def test_pod_cidrs_distinct_and_reused(cluster):
    client = cluster.client

    async def cidrs():
        nodes = (await client.list(NODES))["items"]
        found = {n["metadata"]["name"]: (n.get("spec") or {}).get("podCIDR") for n in nodes}
        return found if all(found.values()) else None

    found = await eventually(cidrs, 5, what="every node has a pod CIDR")
    assert len(set(found.values())) == len(found) == 3
    for name, cidr in found.items():
        network = ipaddress.ip_network(cidr)
        assert network.prefixlen == 24 and network.subnet_of(ipaddress.ip_network("10.42.0.0/16"))
        node = await client.get(NODES, name)
        assert node["spec"]["podCIDRs"] == [cidr]
    # a CIDR a node already holds is never handed out again
    await client.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "held"}, "spec": {"podCIDR": "10.42.3.0/24", "podCIDRs": ["10.42.3.0/24"]}})
    for name in ("new-a", "new-b"):
        await client.create(NODES, {"apiVersion": "v1", "kind": "Node",
                                    "metadata": {"name": name}})
    found = await eventually(cidrs, 5, what="new nodes get pod CIDRs")
    assert len(set(found.values())) == 6
    # a deleted node's CIDR is free again
    freed = found["new-a"]
    await client.delete(NODES, "new-a")
    await client.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "c"}})
    found = await eventually(cidrs, 5, what="the replacement gets a pod CIDR")
    assert found["c"] == freed


async def test_default_tolerations(cluster):
    pod = await cluster.client.create(PODS, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x:1"}], "tolerations": [
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 5}]}})
    tolerations = pod["spec"]["tolerations"]
    assert {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": DEFAULT_TOLERATION_SECONDS} in tolerations
    assert [t for t in tolerations if t["key"] == UNREACHABLE] == [
        {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 5}]


def test_eviction_delay():
    taint = {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2030-01-01T00:00:00Z"}
    now = 1893456000.0  # 2030-01-01T00:00:00Z
    pod = {"spec": {"tolerations": []}}
    assert eviction_delay(pod, [taint], now) == 0.0
    pod = {"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists",
                                     "tolerationSeconds": 30}]}}
    assert eviction_delay(pod, [taint], now + 10) == 20.0
    pod = {"spec": {"tolerations": [{"operator": "Exists"}]}}
    assert eviction_delay(pod, [taint], now) is None


def replicaset(name: str, replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "c", "image": "web:1"}],
                         "tolerations": [{"key": UNREACHABLE, "operator": "Exists",
                                          "effect": "NoExecute", "tolerationSeconds": 1}]}}}}


async def test_silent_node_is_tainted_and_its_pods_move(cluster):
    client = cluster.client
    await client.create(REPLICASETS, replicaset("web", 6))

    async def running():
        pods = (await client.list(PODS, "default", label_selector="app=web"))["items"]
        pods = [p for p in pods if is_active_pod(p)]
        return pods if len(pods) == 6 and all(is_pod_ready(p) for p in pods) else None

    pods = await eventually(running, 10, what="6 running pods")
    victim = max({p["spec"]["nodeName"] for p in pods},
                 key=lambda n: sum(p["spec"]["nodeName"] == n for p in pods))
    # a pod that tolerates the node being unreachable forever stays, but is not ready
    await client.create(PODS, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stays", "namespace": "default"},
        "spec": {"nodeName": victim, "containers": [{"name": "c", "image": "x:1"}],
                 "tolerations": [{"key": UNREACHABLE, "operator": "Exists"}]}})
    await eventually(lambda: _ready(client, "stays"), 15, what="the tolerating pod runs")
    cluster.nodes.stop_heartbeat(victim)

    async def unreachable():
        node = await client.get(NODES, victim)
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        taints = {(t["key"], t["effect"]) for t in node["spec"].get("taints") or []}
        return node if ready["status"] == "Unknown" and taints == {
            (UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")} else None

    node = await eventually(unreachable, 8, what=f"{victim} unreachable")
    for condition in node["status"]["conditions"]:
        assert condition["status"] == "Unknown"
        assert condition["reason"] == "NodeStatusUnknown"
        assert condition["message"] == "Kubelet stopped posting node status."
    assert all(t.get("timeAdded") for t in node["spec"]["taints"])

    async def moved():
        pods = (await client.list(PODS, "default", label_selector="app=web"))["items"]
        active = [p for p in pods if is_active_pod(p)]
        return len(active) == 6 and all(
            p["spec"].get("nodeName") not in (None, victim) and is_pod_ready(p) for p in active)

    await eventually(moved, 10, what="pods recreated on the other nodes")
    evicted = [p for p in (await client.list(PODS, "default", label_selector="app=web"))["items"]
               if p["spec"]["nodeName"] == victim]
    assert evicted and all(p["metadata"].get("deletionTimestamp") for p in evicted)
    assert all(any(c["type"] == "DisruptionTarget" and c["reason"] == "DeletionByTaintManager"
                   for c in p["status"]["conditions"]) for p in evicted)
    stays = await client.get(PODS, "stays", "default")
    assert not stays["metadata"].get("deletionTimestamp")
    assert not is_pod_ready(stays)


async def _ready(client, name: str) -> bool:
    return is_pod_ready(await client.get(PODS, name, "default"))
