"""The Service proxy: every agent keeps its node's nftables table in step with the cluster's
Services and EndpointSlices (kube-proxy's job, in its nftables mode).

Two informers (Services, EndpointSlices) feed a `tablekeeper.TableKeeper`: on any change it
computes the rules (`servicerules.build`, pure) and applies what changed since the last apply
as one transaction (map elements and the chains of the Services that changed). After an
apply, conntrack forgets UDP flows to endpoints that went away.

At start the proxy turns on what Services need from the kernel: IPv4 forwarding, and bridged
traffic through the IP hooks (`bridge-nf-call-iptables`), without which a pod reaching a
Service whose endpoint sits on the same bridge gets answers from the wrong address. The
table stays when the agent stops, so Services keep working while it restarts (as
kube-proxy's rules do); `servicerules.removal` is the script that takes it away, for the
killall script still to come (issue 13).
"""

from __future__ import annotations

import asyncio
import logging

from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.informer import Informer
from k8py.net import nftscript, servicerules
from k8py.net.nft import Nft
from k8py.net.tablekeeper import TableKeeper

log = logging.getLogger(__name__)

SERVICES = builtin("v1", "services")
ENDPOINT_SLICES = builtin("discovery.k8s.io/v1", "endpointslices")
SYSCTLS = {"/proc/sys/net/ipv4/ip_forward": "1",
           "/proc/sys/net/bridge/bridge-nf-call-iptables": "1"}


def enable_kernel_settings() -> None:
    for path, value in SYSCTLS.items():
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            log.warning("cannot set %s to %s: %s", path, value, exc)


def forget_udp_flows(stale: set[tuple[str, str, int]]) -> int:
    """Delete the conntrack entries of UDP flows from a Service address and port to an
    endpoint that is gone; how many."""
    from pyroute2 import Conntrack

    deleted = 0
    try:
        with Conntrack() as conntrack:
            for entry in list(conntrack.dump_entries()):
                original, reply = entry.tuple_orig, entry.tuple_reply
                if original.proto == 17 and \
                        (original.daddr, reply.saddr, original.dport) in stale:
                    conntrack.delete(entry)
                    deleted += 1
    except Exception as exc:  # conntrack unavailable: the flows time out on their own
        log.warning("forgetting UDP flows to removed endpoints: %s", exc)
    return deleted


class ServiceProxy(TableKeeper):
    what = "service rules"

    def __init__(self, client: Client, cluster_cidr: str, node: str = "",
                 nft: Nft | None = None, skip: set[str] | frozenset[str] = frozenset(),
                 informers: tuple[Informer, Informer] | None = None):
        # Services and EndpointSlices; given (and run) by the agent when others share them
        self.services, self.slices = informers or (Informer(client, SERVICES),
                                                   Informer(client, ENDPOINT_SLICES))
        super().__init__((self.services, self.slices), informers is not None, nft)
        self.cluster_cidr = cluster_cidr
        self.node = node
        self.skip = set(skip)  # addresses answered on the node itself (cluster DNS)
        self.ports: list[servicerules.ServicePort] = []  # what `applied` was built from
        self._building: list[servicerules.ServicePort] = []

    def build(self) -> nftscript.Table:
        self._building = [p for p in servicerules.service_ports(self.services.list(),
                                                                self.slices.list())
                          if not self.skip.intersection(p.addresses)]
        return servicerules.build(self._building, self.cluster_cidr, self.node)

    async def after_apply(self) -> None:
        """UDP flows to endpoints that went away are forgotten by conntrack."""
        stale = servicerules.stale_udp(self.ports, self._building)
        self.ports = self._building
        if stale:
            await asyncio.to_thread(forget_udp_flows, stale)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        enable_kernel_settings()
        await super().run(ready)
