"""Services against a real API server, the scheduler and simulated nodes: ClusterIPs and
NodePorts allocated at create without collisions, upstream's errors for taken and
out-of-range values, release on delete and type change; Endpoints and EndpointSlices that
track the ready pods a service selects."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from k8py.api import errors
from k8py.api.resources import builtin
from tests.conftest import eventually

SERVICES = builtin("v1", "services")
ENDPOINTS = builtin("v1", "endpoints")
SLICES = builtin("discovery.k8s.io/v1", "endpointslices")
PODS = builtin("v1", "pods")
REPLICASETS = builtin("apps/v1", "replicasets")


def service(name: str, kind: str = "ClusterIP", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": kind, "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": "web"}], **spec}}


async def test_kubernetes_service_exists(cluster):
    svc = await cluster.client.get(SERVICES, "kubernetes", "default")
    assert svc["spec"]["clusterIP"] == "10.43.0.1"
    assert svc["spec"]["ports"][0]["port"] == 443


async def test_concurrent_creates_get_distinct_ips_and_ports(cluster):
    client = cluster.client
    created = await asyncio.gather(*(client.create(SERVICES, service(f"s{i}", "NodePort"))
                                     for i in range(50)))
    ips = [s["spec"]["clusterIP"] for s in created]
    ports = [s["spec"]["ports"][0]["nodePort"] for s in created]
    assert len(set(ips)) == 50 and "10.43.0.1" not in ips
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.43.0.0/16") for ip in ips)
    assert len(set(ports)) == 50 and all(30000 <= p <= 32767 for p in ports)
    spec = created[0]["spec"]
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"


async def test_requested_values_and_errors(cluster):
    client = cluster.client
    first = await client.create(SERVICES, service(
        "a", "NodePort", clusterIP="10.43.0.50",
        ports=[{"name": "http", "port": 80, "nodePort": 30080}]))
    assert first["spec"]["clusterIP"] == "10.43.0.50"
    assert first["spec"]["ports"][0]["nodePort"] == 30080
    with pytest.raises(errors.Invalid) as taken:
        await client.create(SERVICES, service("b", clusterIP="10.43.0.50"))
    assert 'spec.clusterIPs: Invalid value: []string{"10.43.0.50"}: failed to allocate IP ' \
        "10.43.0.50: provided IP is already allocated" in taken.value.message
    with pytest.raises(errors.Invalid) as outside:
        await client.create(SERVICES, service("b", clusterIP="10.99.0.1"))
    assert "the provided IP (10.99.0.1) is not in the valid range. The range of valid IPs is " \
        "10.43.0.0/16" in outside.value.message
    with pytest.raises(errors.Invalid) as port_taken:
        await client.create(SERVICES, service(
            "b", "NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}]))
    assert "spec.ports[0].nodePort: Invalid value: 30080: provided port is already " \
        "allocated" in port_taken.value.message
    # nothing of the failed creates stays reserved; headless and ExternalName get no IP
    headless = await client.create(SERVICES, service("h", clusterIP="None"))
    assert headless["spec"]["clusterIPs"] == ["None"]
    external = await client.create(SERVICES, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
        "spec": {"type": "ExternalName", "externalName": "example.com"}})
    assert "clusterIP" not in external["spec"]
    # deleting frees the address and the port for the next one who asks
    await client.delete(SERVICES, "a", "default")
    again = await client.create(SERVICES, service(
        "b", "NodePort", clusterIP="10.43.0.50",
        ports=[{"name": "http", "port": 80, "nodePort": 30080}]))
    assert again["spec"]["clusterIP"] == "10.43.0.50"


async def test_update_keeps_and_type_change_releases(cluster):
    client = cluster.client
    svc = await client.create(SERVICES, service(
        "t", "NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30100}]))
    ip = svc["spec"]["clusterIP"]
    # a PUT that leaves the allocated values out keeps them
    body = service("t", "NodePort")
    body["metadata"]["resourceVersion"] = svc["metadata"]["resourceVersion"]
    updated = await client.update(SERVICES, body)
    assert updated["spec"]["clusterIP"] == ip
    assert updated["spec"]["ports"][0]["nodePort"] == 30100
    # NodePort → ClusterIP gives the node port back
    changed = await client.patch(SERVICES, "t", {"spec": {"type": "ClusterIP"}}, "default")
    assert "nodePort" not in changed["spec"]["ports"][0]
    other = await client.create(SERVICES, service(
        "u", "NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30100}]))
    assert other["spec"]["ports"][0]["nodePort"] == 30100
    # → ExternalName gives the address back
    await client.patch(SERVICES, "t", {"spec": {"type": "ExternalName",
                                                "externalName": "example.com",
                                                "clusterIP": None, "clusterIPs": None}},
                       "default")
    reused = await client.create(SERVICES, service("v", clusterIP=ip))
    assert reused["spec"]["clusterIP"] == ip


def replicaset(name: str, replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "c", "image": "web:1",
                                         "ports": [{"name": "web", "containerPort": 8080}]}]}}}}


async def test_endpoints_and_slices_track_ready_pods(cluster):
    client = cluster.client
    svc = await client.create(SERVICES, service("web"))
    await client.create(REPLICASETS, replicaset("web", 3))

    async def endpoints():
        try:
            return await client.get(ENDPOINTS, "web", "default")
        except errors.NotFound:
            return None

    async def three_ready():
        ep = await endpoints()
        subsets = (ep or {}).get("subsets") or []
        return ep if len(subsets) == 1 and len(subsets[0].get("addresses") or []) == 3 else None

    ep = await eventually(three_ready, 10, what="3 ready addresses")
    subset = ep["subsets"][0]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    address = subset["addresses"][0]
    assert address["targetRef"]["kind"] == "Pod" and address["nodeName"].startswith("sim-")

    async def slices():
        body = await client.list(SLICES, "default",
                                 label_selector="kubernetes.io/service-name=web")
        return body["items"]

    async def three_ready_in_slice():
        items = await slices()
        return items if len(items) == 1 and len(items[0].get("endpoints") or []) == 3 and all(
            e["conditions"]["ready"] for e in items[0]["endpoints"]) else None

    items = await eventually(three_ready_in_slice, 10, what="slice with 3 ready endpoints")
    slice_ = items[0]
    labels = slice_["metadata"]["labels"]
    assert labels["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
    assert slice_["addressType"] == "IPv4"
    assert slice_["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert slice_["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert slice_["metadata"]["generateName"] == "web-"

    # a pod that stops being ready moves to notReadyAddresses; in the slice, ready=False
    pods = (await client.list(PODS, "default", label_selector="app=web"))["items"]
    victim = pods[0]
    conditions = [{**c, "status": "False"} if c["type"] == "Ready" else c
                  for c in victim["status"]["conditions"]]
    await client.patch(PODS, victim["metadata"]["name"], {"status": {"conditions": conditions}},
                       "default", subresource="status")

    async def one_not_ready():
        ep = await endpoints()
        subset = ((ep or {}).get("subsets") or [{}])[0]
        return len(subset.get("addresses") or []) == 2 and \
            [a["targetRef"]["name"] for a in subset.get("notReadyAddresses") or []] == \
            [victim["metadata"]["name"]]

    await eventually(one_not_ready, 10, what="one not-ready address")

    async def slice_not_ready():
        items = await slices()
        states = {e["targetRef"]["name"]: e["conditions"] for e in items[0]["endpoints"]}
        return states.get(victim["metadata"]["name"]) == {
            "ready": False, "serving": False, "terminating": False}

    await eventually(slice_not_ready, 10, what="slice endpoint not ready")

    # scaling to zero empties both; deleting the service removes them
    await client.patch(REPLICASETS, "web", {"spec": {"replicas": 0}}, "default")
    await eventually(lambda: endpoints_empty(client), 10, what="empty endpoints")

    async def placeholder():
        items = await slices()
        return len(items) == 1 and not items[0].get("endpoints")

    await eventually(placeholder, 10, what="placeholder slice")
    await client.delete(SERVICES, "web", "default")
    await eventually(lambda: _gone(endpoints), 10, what="endpoints deleted")
    await eventually(lambda: _no(slices), 10, what="slices deleted")


async def endpoints_empty(client) -> bool:
    ep = await client.get(ENDPOINTS, "web", "default")
    return not ep.get("subsets")


async def _gone(get) -> bool:
    return await get() is None


async def _no(list_) -> bool:
    return not await list_()


async def test_slices_split_at_100(cluster):
    client = cluster.client
    await client.create(SERVICES, service("big"))
    await client.create(REPLICASETS, replicaset("big", 120))

    async def split():
        items = (await client.list(SLICES, "default",
                                   label_selector="kubernetes.io/service-name=big"))["items"]
        sizes = sorted(len(i.get("endpoints") or []) for i in items)
        return sizes == [20, 100]

    await eventually(split, 20, what="two slices of 100 and 20")
