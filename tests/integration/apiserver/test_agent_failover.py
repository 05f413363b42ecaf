"""A joined agent through the failover of its API server (`client.loadbalancer`,
`agent.apiservers`): it joins through the *second* of two API servers over one store (the
join endpoint and the CA are every server's), learns both from the `kubernetes` endpoints,
and when the server it joined through stops:

- its node's Lease goes on being renewed and its Ready condition posted, through the other;
- its pod informer resumes its watch there from the last resourceVersion, without listing
  again (client-go's reflector), and a pod bound to the node after the stop still starts;
- the certificate rotation's non-resource requests (`/cacerts`, the serving certificate)
  and the ingress token holder go to the other server too: one server list for all.

The node is a simulated one (`agent.simulated`: the kubelet's Lease, status and pod loops
without containers) acting with the joined node's own client certificate; the agent's other
components (proxy, DNS, policy, ingress) are informers on that same client and transport.
"""

from __future__ import annotations

import asyncio

from k8py.agent import apiservers, join
from k8py.agent.certrotation import Rotation
from k8py.agent.ingresstoken import IngressToken
from k8py.agent.simulated import LEASES, NODES, PODS, SimulatedNodes
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.server import pki
from k8py.server.daemon import INGRESS_SERVICE_ACCOUNT
from k8py.client.loadbalancer import ServerList
from tests.conftest import eventually
from tests.integration.apiserver.test_several_servers import (  # noqa: F401 (a fixture)
    _second_loopback_address, agent_transport, servers)

ACCOUNTS = builtin("v1", "serviceaccounts")
SECRETS = builtin("v1", "secrets")
NODE = "sim-ha-0"


async def _lease_renew_time(admin: Client) -> str:
    return (await admin.get(LEASES, NODE, "kube-node-lease"))["spec"]["renewTime"]


async def _ready(admin: Client) -> tuple[str, str] | None:
    node = await admin.get(NODES, NODE)
    for condition in node["status"].get("conditions") or ():
        if condition["type"] == "Ready":
            return condition["status"], condition["lastHeartbeatTime"]
    return None


async def _running(admin: Client, name: str) -> bool:
    pod = await admin.get(PODS, name, "default")
    return (pod.get("status") or {}).get("phase") == "Running"


def _pod(name: str) -> dict:
    return {"metadata": {"name": name}, "spec": {
        "nodeName": NODE, "containers": [{"name": "c", "image": "nginx"}]}}


async def test_an_agent_joined_through_the_second_server_survives_its_stop(tmp_path):
    async with servers(tmp_path, join=True) as (certs, store, port, running):
        first, second = running
        admin = Client(agent_transport(certs, ServerList(first.url)))
        await admin.create(ACCOUNTS, dict(INGRESS_SERVICE_ACCOUNT), "kube-system")
        # `k8py agent --server <the second server>`: joined there
        agent_dir = tmp_path / "agent"
        credentials = await join.join(second.url, pki.read_token(certs),
                                      str(agent_dir / "tls"), NODE, ("127.0.0.1",))
        server_list = apiservers.server_list(second.url, str(tmp_path))
        transport = credentials.transport(second.url, servers=server_list)
        client = Client(transport, field_manager="k8py-kubelet")
        following = asyncio.create_task(apiservers.follow(client, transport))
        nodes = SimulatedNodes(client, 1, prefix="ha", heartbeat=0.2, status_interval=0.2)
        lists = 0
        listing = nodes.pods._relist

        async def counted_list() -> None:
            nonlocal lists
            lists += 1
            await listing()
        nodes.pods._relist = counted_list
        ready = asyncio.Event()
        simulating = asyncio.create_task(nodes.run(ready))
        rotation = Rotation(credentials, client, transport, NODE, addresses=("127.0.0.1",),
                            password_file=str(agent_dir / "node-password"))
        keeper = IngressToken(client, NODE, second.url, credentials.ca_cert,
                              servers=server_list)
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await eventually(lambda: server_list.servers == [first.url, second.url], 10,
                             what="both servers learned from the endpoints")
            await eventually(lambda: _ready(admin), 10, what="the node Ready")
            await admin.create(PODS, _pod("before"), "default")
            await eventually(lambda: _running(admin, "before"), 10, what="a pod started")
            await keeper.request()
            assert transport.server == second.url and keeper.transport.server == second.url
            assert lists == 1

            await second.stop()
            renewed = await _lease_renew_time(admin)
            await eventually(lambda: _later(_lease_renew_time(admin), renewed), 10,
                             what="the Lease renewed through the first server")
            assert transport.server == first.url
            heartbeat = (await _ready(admin))[1]
            await eventually(lambda: _ready_after(admin, heartbeat), 10,
                             what="Ready posted through the first server")
            # the pod informer resumed its watch there: a new pod starts, with no new list
            await admin.create(PODS, _pod("after"), "default")
            await eventually(lambda: _running(admin, "after"), 10,
                             what="a pod bound after the failover started")
            assert lists == 1, "the informer listed again instead of resuming its watch"
            # the rotation's /cacerts and serving certificate, and the ingress token
            await asyncio.wait_for(rotation._refresh_ca_once(), 10)
            await asyncio.wait_for(rotation.renew_serving(), 30)
            await asyncio.wait_for(keeper.request(), 10)
            assert keeper.transport.server == first.url
            assert keeper.renewals == 2
            await keeper.client.list(SECRETS, "default")
        finally:
            for task in (simulating, following):
                task.cancel()
            await asyncio.gather(simulating, following, return_exceptions=True)
            await keeper.client.close()
            await client.close()
            await admin.close()


async def test_a_restarted_agent_whose_join_server_is_down_starts_on_another(tmp_path):
    """The node's credentials are reused on restart and the servers it learned are in its
    state file: with its `--server` down it joins (the CA, from /cacerts) through another."""
    async with servers(tmp_path, join=True) as (certs, store, port, running):
        first, second = running
        agent_dir = tmp_path / "agent"
        credentials = await join.join(second.url, pki.read_token(certs),
                                      str(agent_dir / "tls"), NODE, ("127.0.0.1",))
        server_list = apiservers.server_list(second.url, str(tmp_path))
        transport = credentials.transport(second.url, servers=server_list)
        client = Client(transport)
        following = asyncio.create_task(apiservers.follow(client, transport))
        try:
            await eventually(lambda: server_list.servers == [first.url, second.url], 10,
                             what="both servers learned from the endpoints")
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            await client.close()
        await second.stop()
        # the agent restarts: the same --server, now down
        restarted = apiservers.server_list(second.url, str(tmp_path))
        assert restarted.servers == [first.url, second.url]
        again = await asyncio.wait_for(join.join(
            second.url, pki.read_token(certs), str(agent_dir / "tls"), NODE, ("127.0.0.1",),
            servers=restarted), 20)
        client = Client(again.transport(second.url, servers=restarted))
        try:
            services = await client.list(builtin("v1", "services"), "default")
            assert [s["metadata"]["name"] for s in services["items"]] == ["kubernetes"]
            assert restarted.current == first.url
        finally:
            await client.close()


async def _later(found, than: str) -> bool:
    return await found > than


async def _ready_after(admin: Client, heartbeat: str) -> bool:
    status, now = await _ready(admin)
    return status == "True" and now > heartbeat

