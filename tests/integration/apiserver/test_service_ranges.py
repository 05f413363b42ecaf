"""Two API servers over one store allocating ClusterIPs and NodePorts at once: the ranges'
bitmaps live in the store (`serviceranges`), so no value is ever handed out twice, and a full
range answers with upstream's error. A fresh API server repairs the bitmaps from the stored
Services."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from k8py.api import errors
from k8py.api.resources import Registry, builtin
from k8py.client.client import Client
from k8py.server.apiserver import app as apiserver, serviceranges
from k8py.server.apiserver.authn import TokenFile
from k8py.server.apiserver.inprocess import InProcessTransport
from tests.integration.inloop import running_apiserver

SERVICES = builtin("v1", "services")
CIDR, PORTS = "10.99.0.0/27", (30100, 30109)  # 30 addresses, 10 node ports


def service(name: str, kind: str = "ClusterIP") -> dict:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": kind, "ports": [{"port": 80}]}}


def second_apiserver(server) -> Client:
    """Another API server's REST handler over the same store, with the same flags."""
    tokens = TokenFile(os.path.join(server.data_dir, "server", "cred", "tokens"))
    app = apiserver.make_app(server.store, tokens, Registry(), service_cidr=CIDR,
                             node_port_range=PORTS)
    return Client(InProcessTransport(app[apiserver.REST_KEY]))


@pytest.fixture
async def two(tmp_path):
    async with running_apiserver(tmp_path, service_cidr=CIDR, node_port_range=PORTS) as server:
        yield server, Client(InProcessTransport(server.app[apiserver.REST_KEY])), \
            second_apiserver(server)


async def create_all(clients, names, kind):
    async def one(i, name):
        try:
            return await clients[i % 2].create(SERVICES, service(name, kind))
        except errors.StatusError as exc:
            return exc
    return await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))


async def test_concurrent_cluster_ips_are_distinct_and_a_full_range_says_so(two):
    server, a, b = two
    results = await create_all([a, b], [f"s{i}" for i in range(34)], "ClusterIP")
    made = [r for r in results if isinstance(r, dict)]
    failed = [r for r in results if not isinstance(r, dict)]
    ips = [s["spec"]["clusterIP"] for s in made]
    assert len(set(ips)) == len(ips) == 30
    assert {(e.code, e.message) for e in failed} == {
        (500, "Internal error occurred: failed to allocate a serviceIP: range is full")}
    await b.delete(SERVICES, "s0", "default")  # freed through one server, taken by the other
    again = await a.create(SERVICES, service("again"))
    assert again["spec"]["clusterIP"] == made[0]["spec"]["clusterIP"]


async def test_concurrent_node_ports_are_distinct_and_a_full_range_says_so(two):
    server, a, b = two
    results = await create_all([a, b], [f"n{i}" for i in range(14)], "NodePort")
    made = [r for r in results if isinstance(r, dict)]
    ports = [s["spec"]["ports"][0]["nodePort"] for s in made]
    assert len(set(ports)) == len(ports) == 10
    messages = {r.message for r in results if not isinstance(r, dict)}
    assert messages == {"Internal error occurred: failed to allocate a nodePort: range is full"}
    # what failed gave back its ClusterIP: 30 - 10 addresses are left
    left = await create_all([a, b], [f"c{i}" for i in range(21)], "ClusterIP")
    assert sum(isinstance(r, dict) for r in left) == 20


async def test_a_starting_api_server_repairs_the_ranges_from_the_services(two):
    server, a, _ = two
    kept = await a.create(SERVICES, service("kept", "NodePort"))
    stored = await server.store.get(serviceranges.SERVICE_IPS_KEY)
    doc = json.loads(stored.value)
    assert doc["kind"] == "RangeAllocation" and doc["range"] == CIDR
    await server.store.delete(serviceranges.SERVICE_IPS_KEY)  # lost, as after a restore
    await server.store.delete(serviceranges.NODE_PORTS_KEY)
    fresh = second_apiserver(server)
    with pytest.raises(errors.Invalid) as taken:
        await fresh.create(SERVICES, {**service("copy"), "spec": {
            "ports": [{"port": 80}], "clusterIP": kept["spec"]["clusterIP"]}})
    assert "provided IP is already allocated" in taken.value.message
    with pytest.raises(errors.Invalid) as port_taken:
        await fresh.create(SERVICES, {**service("copy"), "spec": {"type": "NodePort", "ports": [
            {"port": 80, "nodePort": kept["spec"]["ports"][0]["nodePort"]}]}})
    assert "provided port is already allocated" in port_taken.value.message
