"""Services against a real API server, the scheduler and simulated nodes: ClusterIPs and
NodePorts allocated at create without collisions, upstream's errors for taken and
out-of-range values, release on delete and type change; the server's --service-cidr and
--service-node-port-range reaching the allocator and the controllers; dry runs that show an
allocation without reserving it; Endpoints and EndpointSlices that track the ready pods a
service selects, and the API server's own ones for the `kubernetes` Service."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os

import pytest

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client, Ref
from k8py.server import daemon, pki
from k8py.server.controllers import advertising, manager
from k8py.server.apiserver.authn import TokenFile
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.store import open_backend
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


# --- the server's configuration ------------------------------------------------------------

@contextlib.asynccontextmanager
async def running_server(tmp_path, **config):
    """`daemon.run_store` and `daemon.run_apiserver` on a memory store with `config`,
    listening on a loopback port; an in-process client to it."""
    server_dir = tmp_path / "data" / "server"
    server_dir.mkdir(parents=True)
    certs = pki.ensure_pki(str(server_dir), cluster_domain="cluster.local",
                           service_ip="10.96.0.1")
    tokens = TokenFile.ensure(os.path.join(server_dir, "cred", "tokens"), "system:admin",
                              ("system:masters",))
    store = open_backend("memory://", str(tmp_path / "data"))
    settings = daemon.ServerConfig(
        data_dir=str(tmp_path / "data"), bind_address=ipaddress.ip_address("127.0.0.1"),
        https_listen_port=free_port(), write_kubeconfig=str(tmp_path / "kubeconfig.yaml"),
        **config)
    ready = asyncio.Event()
    handler = asyncio.get_running_loop().create_future()
    tasks = [asyncio.create_task(daemon.run_store(store, ready)),
             asyncio.create_task(daemon.run_apiserver(settings, store, ready, certs, tokens,
                                                      handler))]
    try:
        client = Client(InProcessTransport(await asyncio.wait_for(handler, 10)))
        yield settings, client
    finally:
        for task in reversed(tasks):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def free_port() -> int:
    from tests.e2e.conftest import free_port as pick
    return pick()


async def test_service_cidr_and_node_port_range_from_the_server_config(tmp_path):
    async with running_server(tmp_path, service_cidr=ipaddress.ip_network("10.96.0.0/24"),
                              service_node_port_range=(31000, 31002)) as (config, client):
        kubernetes = await client.get(SERVICES, "kubernetes", "default")
        assert kubernetes["spec"]["clusterIP"] == "10.96.0.1"
        created = [await client.create(SERVICES, service(f"n{i}", "NodePort"))
                   for i in range(3)]
        assert all(ipaddress.ip_address(s["spec"]["clusterIP"]) in config.service_cidr
                   for s in created)
        assert len({s["spec"]["clusterIP"] for s in created} | {"10.96.0.1"}) == 4
        assert sorted(s["spec"]["ports"][0]["nodePort"] for s in created) == \
            [31000, 31001, 31002]
        with pytest.raises(errors.StatusError) as full:
            await client.create(SERVICES, service("n3", "NodePort"))
        assert full.value.code == 500 and "range is full" in full.value.message
        with pytest.raises(errors.Invalid) as outside_ports:
            await client.create(SERVICES, service(
                "p", "NodePort", ports=[{"name": "http", "port": 80, "nodePort": 30080}]))
        assert "The range of valid ports is 31000-31002" in outside_ports.value.message
        with pytest.raises(errors.Invalid) as outside_ips:
            await client.create(SERVICES, service("q", clusterIP="10.43.0.50"))
        assert "The range of valid IPs is 10.96.0.0/24" in outside_ips.value.message
        # a ClusterIP service still gets an address once the node ports are all taken
        plain = await client.create(SERVICES, service("r"))
        assert ipaddress.ip_address(plain["spec"]["clusterIP"]) in config.service_cidr


async def test_control_loops_get_the_node_port_range(monkeypatch):
    seen = []

    async def run_elected(client, settings, **options):
        seen.append(settings)

    monkeypatch.setattr(manager, "run_elected", run_elected)
    handler = asyncio.get_running_loop().create_future()
    handler.set_result(object())
    await daemon.run_control_loops(daemon.ServerConfig(
        service_cidr=ipaddress.ip_network("10.96.0.0/24"),
        service_node_port_range=(31000, 31999)), handler)
    assert seen[0].node_port_range == (31000, 31999)
    assert seen[0].service_cidr == "10.96.0.0/24"


# --- dry runs --------------------------------------------------------------------------------

async def dry_run(client, method: str, body: dict, name: str | None = None) -> dict:
    return await client.transport.call(method, Ref(SERVICES, "default", name),
                                       query={"dryRun": "All"}, body=body)


async def test_dry_run_create_shows_an_allocation_without_reserving_it(cluster):
    client = cluster.client
    shown = await dry_run(client, "POST", service("dry", "NodePort"))
    ip, port = shown["spec"]["clusterIP"], shown["spec"]["ports"][0]["nodePort"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.43.0.0/16") and ip != "10.43.0.1"
    assert shown["spec"]["clusterIPs"] == [ip] and 30000 <= port <= 32767
    with pytest.raises(errors.NotFound):
        await client.get(SERVICES, "dry", "default")
    # neither value was kept: a real service can have both
    real = await client.create(SERVICES, service(
        "real", "NodePort", clusterIP=ip, ports=[{"name": "http", "port": 80,
                                                  "nodePort": port}]))
    assert real["spec"]["clusterIP"] == ip
    # a dry run fails as the real create would
    with pytest.raises(errors.Invalid) as taken:
        await dry_run(client, "POST", service("dry", clusterIP=ip))
    assert "provided IP is already allocated" in taken.value.message
    # kubectl --dry-run=server prints the address too
    proc = await cluster.akubectl("create", "-f", "-", "--dry-run=server", "-o", "json",
                                  input=json.dumps(service("kdry")))
    printed = json.loads(proc.stdout)["spec"]["clusterIP"]
    assert ipaddress.ip_address(printed) in ipaddress.ip_network("10.43.0.0/16")
    with pytest.raises(errors.NotFound):
        await client.get(SERVICES, "kdry", "default")
    await client.create(SERVICES, service("after", clusterIP=printed))


async def test_dry_run_update_shows_node_ports_without_reserving_them(cluster):
    client = cluster.client
    svc = await client.create(SERVICES, service("up"))
    body = {**svc, "spec": {**svc["spec"], "type": "NodePort"}}
    shown = await dry_run(client, "PUT", body, "up")
    port = shown["spec"]["ports"][0]["nodePort"]
    assert 30000 <= port <= 32767
    assert shown["spec"]["clusterIP"] == svc["spec"]["clusterIP"]
    stored = await client.get(SERVICES, "up", "default")
    assert stored["spec"]["type"] == "ClusterIP" and "nodePort" not in stored["spec"]["ports"][0]
    other = await client.create(SERVICES, service(
        "other", "NodePort", ports=[{"name": "http", "port": 80, "nodePort": port}]))
    assert other["spec"]["ports"][0]["nodePort"] == port
    # the address the service holds stays held
    with pytest.raises(errors.Invalid):
        await client.create(SERVICES, service("thief", clusterIP=svc["spec"]["clusterIP"]))


# --- the kubernetes Service's endpoints -------------------------------------------------------

async def kubernetes_endpoints(client) -> tuple[dict, dict] | None:
    try:
        return (await client.get(ENDPOINTS, "kubernetes", "default"),
                await client.get(SLICES, "kubernetes", "default"))
    except errors.NotFound:
        return None


def points_at(address: str, port: int):
    async def check(client) -> bool:
        found = await kubernetes_endpoints(client)
        if found is None:
            return False
        endpoints, slice_ = found
        return endpoints["subsets"] == [{"addresses": [{"ip": address}], "ports": [
            {"name": "https", "port": port, "protocol": "TCP"}]}] and \
            slice_["endpoints"] == [{"addresses": [address], "conditions": {"ready": True}}] \
            and slice_["ports"] == [{"name": "https", "port": port, "protocol": "TCP"}]
    return check


async def test_the_server_writes_the_kubernetes_endpoints(tmp_path):
    async with running_server(tmp_path) as (config, client):
        port = config.https_listen_port
        await eventually(lambda: points_at("127.0.0.1", port)(client), 10,
                         what="kubernetes endpoints at 127.0.0.1")
        endpoints, slice_ = await kubernetes_endpoints(client)
        assert endpoints["metadata"]["labels"] == {
            "endpointslice.kubernetes.io/skip-mirror": "true"}
        assert slice_["metadata"]["labels"] == {"kubernetes.io/service-name": "kubernetes"}
        assert slice_["addressType"] == "IPv4"
        kubernetes = await client.get(SERVICES, "kubernetes", "default")
        assert kubernetes["spec"]["ports"][0]["targetPort"] == port


def test_advertised_address():
    assert advertising.advertised_address(ipaddress.ip_address("127.0.0.1")) == "127.0.0.1"
    assert advertising.advertised_address(ipaddress.ip_address("10.1.2.3")) == "10.1.2.3"
    primary = advertising.advertised_address(ipaddress.ip_address("0.0.0.0"))
    address = ipaddress.ip_address(primary)
    assert address.version == 4 and not address.is_unspecified
    assert primary == (advertising.primary_ipv4() or "127.0.0.1")


async def test_kubernetes_endpoints_are_kept_and_left_alone_by_controllers(cluster):
    client = cluster.client
    keeper = asyncio.create_task(advertising.keep(client, "127.0.0.1", 6443, interval=0.05))
    try:
        await eventually(lambda: points_at("127.0.0.1", 6443)(client), 10, what="written")
        await client.delete(ENDPOINTS, "kubernetes", "default")
        await client.delete(SLICES, "kubernetes", "default")
        await eventually(lambda: points_at("127.0.0.1", 6443)(client), 10, what="recreated")
        slice_ = await client.get(SLICES, "kubernetes", "default")
        await client.update(SLICES, {**slice_, "endpoints": [
            {"addresses": ["10.9.9.9"], "conditions": {"ready": True}}]})
        await eventually(lambda: points_at("127.0.0.1", 6443)(client), 10, what="reset")
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    before = await kubernetes_endpoints(client)
    # Touch the kubernetes Service so the controllers reconcile it, then wait until they
    # have handled a later service: the kubernetes objects stay as the API server wrote them.
    await client.patch(SERVICES, "kubernetes", {"metadata": {"labels": {"touched": "1"}}},
                       "default")
    await client.create(SERVICES, service("probe"))

    async def probe_handled() -> bool:
        slices = await client.list(SLICES, "default",
                                   label_selector="kubernetes.io/service-name=probe")
        try:
            await client.get(ENDPOINTS, "probe", "default")
        except errors.NotFound:
            return False
        return bool(slices["items"])

    await eventually(probe_handled, 10, what="probe service's endpoints and slice")
    after = await kubernetes_endpoints(client)
    assert [o["metadata"]["resourceVersion"] for o in after] == \
        [o["metadata"]["resourceVersion"] for o in before]
    slices = await client.list(SLICES, "default",
                               label_selector="kubernetes.io/service-name=kubernetes")
    assert [s["metadata"]["name"] for s in slices["items"]] == ["kubernetes"]


# --- LoadBalancer Services on the nodes' addresses (servicelb) ------------------------------

async def test_load_balancers_get_the_nodes_addresses_and_a_taken_port_waits(cluster):
    client = cluster.client
    nodes = (await client.list(builtin("v1", "nodes")))["items"]
    addresses = sorted({a["address"] for n in nodes for a in n["status"].get("addresses") or ()
                        if a["type"] == "InternalIP"},
                       key=lambda ip: tuple(int(x) for x in ip.split(".")))

    def lb(name: str, port: int) -> dict:
        return {"metadata": {"name": name},
                "spec": {"type": "LoadBalancer", "selector": {"app": name},
                         "ports": [{"port": port, "targetPort": 8080}]}}

    await client.create(SERVICES, lb("first", 8088), "default")

    async def ingress(name):
        svc = await client.get(SERVICES, name, "default")
        return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get(
            "ingress") or []]
    assert await eventually(lambda: ingress("first"), 10, what="ingress") == addresses
    await client.create(SERVICES, lb("second", 8088), "default")

    async def warned():
        events = (await client.list(builtin("v1", "events"), "default"))["items"]
        return [e for e in events if e["reason"] == "PortInUse"
                and e["involvedObject"]["name"] == "second"]
    [event] = await eventually(warned, 10, what="a PortInUse event")
    assert "default/first" in event["message"]
    assert await ingress("second") == []
    # the port is free once the first goes
    await client.delete(SERVICES, "first", "default")
    assert await eventually(lambda: ingress("second"), 10, what="second served") == addresses
    # a class of its own: not ours
    classy = lb("classy", 9099)
    classy["spec"]["loadBalancerClass"] = "example.com/other"
    await client.create(SERVICES, classy, "default")
    await asyncio.sleep(0.5)
    assert await ingress("classy") == []
