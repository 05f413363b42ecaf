"""Several API servers over one store: each writes itself into the `kubernetes` endpoints
through its lease (`apiserver.masterleases`, `controllers.advertising`), and an agent-side
client that learned them from those endpoints fails over when one stops
(`client.loadbalancer`, `agent.apiservers`).

Two real HTTPS API servers (two apps, one memory store, one PKI) listen on the same port at
127.0.0.1 and 127.0.0.2 (the endpoints carry one port for all servers, as upstream's).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os

import pytest

from k8py.agent import apiservers
from k8py.api.resources import Registry, builtin
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from k8py.client.informer import Informer
from k8py.client.loadbalancer import ServerList
from k8py.server import pki
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver import masterleases
from k8py.server.apiserver.authn import TokenFile
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.controllers import advertising
from k8py.server.daemon import bootstrap
from k8py.server.store import open_backend
from tests.conftest import eventually
from tests.integration.inloop import free_port

CONFIGMAPS = builtin("v1", "configmaps")
ENDPOINTS = builtin("v1", "endpoints")
SLICES = builtin("discovery.k8s.io/v1", "endpointslices")
ADDRESSES = ("127.0.0.1", "127.0.0.2")


@dataclasses.dataclass
class Running:
    address: str
    url: str
    serving: asyncio.Task
    keeping: asyncio.Task

    async def stop(self) -> None:
        """As a stopping server: out of the endpoints first, then the listener closed."""
        for task in (self.keeping, self.serving):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def servers(tmp_path, ttl: float = masterleases.LEASE_TTL, *, join: bool = False):
    """`join`: each server also serves the node-join endpoints (one PKI, one token)."""
    server_dir = str(tmp_path / "data" / "server")
    os.makedirs(server_dir, mode=0o700)
    certs = pki.ensure_pki(server_dir, cluster_domain="cluster.local", service_ip="10.43.0.1",
                           tls_san=ADDRESSES)
    tokens = TokenFile.ensure(os.path.join(server_dir, "cred", "tokens"), "system:admin",
                              ("system:masters",))
    store = open_backend("memory://", str(tmp_path / "data"))
    await store.start()
    await bootstrap(store, Registry())
    port = free_port()
    context = apiserver.tls_context(certs.serving_cert, certs.serving_key, certs.ca_cert)
    running: list[Running] = []
    try:
        for address in ADDRESSES:
            app = apiserver.make_app(store, tokens, Registry(),
                                     join_pki=certs if join else None,
                                     disable_admission_plugins=("ServiceAccount",))
            ready = asyncio.Event()
            serving = asyncio.create_task(apiserver.serve(app, address, port, context, ready))
            await asyncio.wait_for(ready.wait(), 10)
            client = Client(InProcessTransport(app[apiserver.REST_KEY]),
                            field_manager=advertising.FIELD_MANAGER)
            keeping = asyncio.create_task(advertising.keep(
                client, address, port, interval=0.2,
                leases=masterleases.MasterLeases(store, ttl)))
            running.append(Running(address, f"https://{address}:{port}", serving, keeping))
        yield certs, store, port, running
    finally:
        for server in running:
            await server.stop()
        await store.close()


def agent_transport(certs, servers: ServerList) -> HttpTransport:
    import ssl
    tls = ssl.create_default_context(cafile=certs.ca_cert)
    tls.load_cert_chain(certs.admin_cert, certs.admin_key)
    return HttpTransport(servers.default, tls, servers=servers)


async def endpoint_addresses(client: Client) -> tuple[list[str], list[str]]:
    endpoints = await client.get(ENDPOINTS, "kubernetes", "default")
    slice_ = await client.get(SLICES, "kubernetes", "default")
    return ([a["ip"] for s in endpoints["subsets"] for a in s["addresses"]],
            [e["addresses"][0] for e in slice_["endpoints"]])


async def test_every_server_is_in_the_endpoints_and_a_stopping_one_leaves(tmp_path):
    async with servers(tmp_path) as (certs, store, port, running):
        transport = agent_transport(certs, ServerList(running[1].url))
        client = Client(transport)
        try:
            both = (list(ADDRESSES), list(ADDRESSES))
            await eventually(lambda: _equals(endpoint_addresses(client), both), 10,
                             what="both servers in the endpoints")
            endpoints = await client.get(ENDPOINTS, "kubernetes", "default")
            assert endpoints["subsets"][0]["ports"] == [
                {"name": "https", "port": port, "protocol": "TCP"}]
            assert await masterleases.MasterLeases(store).addresses() == list(ADDRESSES)
            await running[0].stop()
            # taken out by the stopping server itself, at once
            assert await endpoint_addresses(client) == (["127.0.0.2"], ["127.0.0.2"])
            assert await masterleases.MasterLeases(store).addresses() == ["127.0.0.2"]
        finally:
            await client.close()


async def test_a_dead_server_drops_out_when_its_lease_expires(tmp_path):
    async with servers(tmp_path, ttl=1.0) as (certs, store, port, running):
        # a server that died: its lease written, then never renewed nor removed
        await masterleases.MasterLeases(store, ttl=1.0).renew("127.0.0.9")
        transport = agent_transport(certs, ServerList(running[0].url))
        client = Client(transport)
        try:
            await eventually(lambda: _contains(endpoint_addresses(client), "127.0.0.9"), 10,
                             what="the dead server's address while its lease lasts")
            await eventually(lambda: _equals(endpoint_addresses(client),
                                             (list(ADDRESSES), list(ADDRESSES))), 10,
                             what="the dead server gone once its lease expired")
        finally:
            await client.close()


async def test_an_agent_learns_the_servers_and_fails_over_when_one_stops(tmp_path):
    async with servers(tmp_path) as (certs, store, port, running):
        first, second = running
        state = str(tmp_path / "agent" / "etc" / "k8py-agent-load-balancer.json")
        transport = agent_transport(certs, ServerList(first.url, state))
        client = Client(transport)
        following = asyncio.create_task(apiservers.follow(client, transport))
        informer = Informer(client, CONFIGMAPS, "default")
        informing = asyncio.create_task(informer.run())
        try:
            await eventually(lambda: transport.servers.servers == [first.url, second.url], 10,
                             what="both servers learned from the endpoints")
            assert ServerList(first.url, state).servers == [first.url, second.url]
            await asyncio.wait_for(informer.synced.wait(), 10)
            await client.create(CONFIGMAPS, {"metadata": {"name": "before"}}, "default")
            await eventually(lambda: informer.get("default/before"), 10, what="seen before")
            assert transport.server == first.url

            await first.stop()
            # requests go on through the second server
            made = await asyncio.wait_for(client.create(
                CONFIGMAPS, {"metadata": {"name": "after"}}, "default"), 10)
            assert made["metadata"]["name"] == "after"
            assert transport.server == second.url
            assert (await client.get(CONFIGMAPS, "after", "default"))["metadata"]["name"] == \
                "after"
            # the watch is made again there
            await eventually(lambda: informer.get("default/after"), 10,
                             what="a change made after the failover seen by the informer")
            await client.create(CONFIGMAPS, {"metadata": {"name": "later"}}, "default")
            await eventually(lambda: informer.get("default/later"), 10, what="watched there")
            # and the list follows the endpoints: the stopped server is gone from it
            await eventually(lambda: transport.servers.servers == [second.url], 10,
                             what="the stopped server taken out of the list")
        finally:
            for task in (informing, following):
                task.cancel()
            await asyncio.gather(informing, following, return_exceptions=True)
            await client.close()


async def _equals(found, wanted) -> bool:
    return await found == wanted


async def _contains(found, address) -> bool:
    endpoints, slices = await found
    return address in endpoints and address in slices


@pytest.fixture(autouse=True)
def _second_loopback_address():
    import socket
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("127.0.0.2 cannot be bound on this host")


async def test_a_server_marked_failed_loses_its_watches_which_go_on_elsewhere(tmp_path):
    """A server that stops answering (a failed request or health check) may leave its
    watches open but silent: they are cut, and their informer goes on at the next one."""
    async with servers(tmp_path) as (certs, store, port, running):
        first, second = running
        lb = ServerList(first.url)
        lb.update([first.url, second.url])
        transport = agent_transport(certs, lb)
        client = Client(transport)
        informer = Informer(client, CONFIGMAPS, "default")
        informing = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.synced.wait(), 10)
            await eventually(lambda: transport._watches.get(first.url), 10, what="watching")
            lb.failed(first.url)
            await eventually(lambda: transport._watches.get(second.url), 10,
                             what="the watch made again on the second server")
            assert not transport._watches.get(first.url)
            await client.create(CONFIGMAPS, {"metadata": {"name": "moved"}}, "default")
            await eventually(lambda: informer.get("default/moved"), 10, what="watched there")
        finally:
            informing.cancel()
            await asyncio.gather(informing, return_exceptions=True)
            await client.close()
