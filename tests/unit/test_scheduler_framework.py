"""The scheduling cycle as a pure function of a snapshot: filters, scores, messages."""

from k8py.agent.simulated import node_object
from k8py.server.scheduler.framework import (Framework, PodInfo, Snapshot, feasible_target,
                                             pod_requests, unschedulable_message)
from k8py.server.scheduler.plugins import default_plugins, tolerates


def pod(name, labels=None, **spec):
    return {"metadata": {"name": name, "namespace": "default", "uid": name,
                         "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "img"}], **spec}}


def snapshot(count=3, cpu="4"):
    snap = Snapshot()
    for i in range(count):
        snap.set_node(node_object(f"n{i}", i, cpu, "8Gi", 110))
    return snap


def schedule(snap, p):
    return Framework(default_plugins()).schedule(PodInfo.of(p), snap)


def test_requests_sum_containers_and_take_the_largest_init_container():
    spec = {"containers": [{"resources": {"requests": {"cpu": "100m", "memory": "1Mi"}}},
                           {"resources": {"limits": {"cpu": "200m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "1"}}}],
            "overhead": {"cpu": "10m"}}
    assert pod_requests(spec) == {"cpu": 1010, "memory": 2 ** 20}


def test_resource_fit_and_the_upstream_message():
    snap = snapshot(2)
    snap.place(PodInfo.of(pod("hog", containers=[{"name": "c", "resources": {
        "requests": {"cpu": "3500m"}}}])), "n0")
    snap.nodes["n1"].set_node({**node_object("n1", 1, "4", "8Gi", 110),
                               "spec": {"taints": [{"key": "k", "value": "v",
                                                    "effect": "NoSchedule"}]}})
    result = schedule(snap, pod("big", containers=[{"name": "c", "resources": {
        "requests": {"cpu": "1"}}}]))
    assert result.node is None
    assert unschedulable_message(result, 2) == (
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {k: v}.")


def test_pod_count_limit():
    snap = snapshot(1)
    snap.nodes["n0"].allocatable["pods"] = 1
    snap.place(PodInfo.of(pod("first")), "n0")
    result = schedule(snap, pod("second"))
    assert dict(result.reasons) == {"Too many pods": 1}


def test_least_allocated_prefers_the_emptier_node():
    snap = snapshot(2)
    snap.place(PodInfo.of(pod("busy", containers=[{"name": "c", "resources": {
        "requests": {"cpu": "2", "memory": "4Gi"}}}])), "n0")
    assert {schedule(snap, pod(f"p{i}")).node for i in range(5)} == {"n1"}


def test_spreading_pods_of_one_controller():
    snap = snapshot(3)
    owner = [{"uid": "rs-1", "controller": True, "kind": "ReplicaSet", "name": "rs",
              "apiVersion": "apps/v1"}]
    placed = []
    for i in range(6):
        p = pod(f"r{i}")
        p["metadata"]["ownerReferences"] = owner
        info = PodInfo.of(p)
        result = Framework(default_plugins()).schedule(info, snap)
        snap.place(info, result.node)
        placed.append(result.node)
    assert sorted(placed) == ["n0", "n0", "n1", "n1", "n2", "n2"]


def test_tolerations():
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert tolerates([{"operator": "Exists"}], taint)
    assert tolerates([{"key": "k", "operator": "Exists", "effect": "NoSchedule"}], taint)
    assert tolerates([{"key": "k", "value": "v"}], taint)
    assert not tolerates([{"key": "k", "value": "w"}], taint)
    assert not tolerates([{"key": "k", "operator": "Exists", "effect": "NoExecute"}], taint)


def test_first_pod_of_a_self_affine_group_may_go_anywhere():
    snap = snapshot(2)
    affinity = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    first = schedule(snap, pod("a", {"app": "x"}, affinity=affinity))
    assert first.node is not None
    snap.place(PodInfo.of(pod("a", {"app": "x"}, affinity=affinity)), first.node)
    assert schedule(snap, pod("b", {"app": "x"}, affinity=affinity)).node == first.node


def test_enough_feasible_nodes_is_upstreams_adaptive_share():
    assert feasible_target(50) == 50
    assert feasible_target(1000) == 420
    assert feasible_target(5000) == 500
