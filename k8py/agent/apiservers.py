"""The agent learns every API server from the `kubernetes` endpoints and keeps its
transport's server list current (k3s's agent does the same for its load balancer).

Every live API server writes its address into the Endpoints `default/kubernetes`
(`k8py.server.controllers.advertising`); `follow` watches that one object (an informer: it
lists and watches again through whichever server is reachable) and hands its addresses, as
`https://<ip>:<port>` URLs, to the `ServerList` the agent's one HTTP transport fails over
on. The transport's health checks run alongside. The list is kept in
`<data-dir>/agent/etc/k8py-agent-load-balancer.json` (`state_file`), so a restarted agent
knows the servers before it reaches any. An agent has one list (`server_list`), shared by
the join (`agent.join`: any server answers it), the node's transport, the certificate
rotation and the ingress token's transport.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from typing import Any

from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from k8py.client.informer import Informer
from k8py.client.loadbalancer import ServerList

ENDPOINTS = builtin("v1", "endpoints")
STATE_FILE = os.path.join("agent", "etc", "k8py-agent-load-balancer.json")


def state_file(data_dir: str) -> str:
    return os.path.join(data_dir, STATE_FILE)


def server_list(server: str, data_dir: str) -> ServerList:
    """The list an agent joined to `server` starts from (what it learned before, if any)."""
    return ServerList(server, state_file(data_dir))


def _url(ip: str, port: int) -> str:
    host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
    return f"https://{host}:{port}"


def server_urls(endpoints: dict[str, Any]) -> list[str]:
    """The API servers an Endpoints `kubernetes` lists (its `https` port, else its only one)."""
    urls = []
    for subset in endpoints.get("subsets") or ():
        ports = subset.get("ports") or ()
        port = next((p["port"] for p in ports if p.get("name") == "https"),
                    ports[0]["port"] if len(ports) == 1 else None)
        if port is None:
            continue
        urls += [_url(a["ip"], port) for a in subset.get("addresses") or () if a.get("ip")]
    return urls


async def follow(client: Client, transport: HttpTransport) -> None:
    """Keep `transport.servers` the servers the endpoints list, and health-check them,
    until cancelled."""
    informer = Informer(client, ENDPOINTS, "default", field_selector="metadata.name=kubernetes")

    def learned(endpoints: dict[str, Any], *_: Any) -> None:
        transport.servers.update(server_urls(endpoints))
    informer.add_handlers(on_add=learned, on_update=lambda _old, new: learned(new))
    tasks = [asyncio.create_task(informer.run()), asyncio.create_task(transport.check_health())]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
