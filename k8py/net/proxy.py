"""The Service proxy: every agent keeps its node's nftables table in step with the cluster's
Services and EndpointSlices (kube-proxy's job, in its nftables mode).

Two informers (Services, EndpointSlices) feed one loop: any change marks the rules stale;
after a short debounce (so a rollout's burst of EndpointSlice writes is one apply) the loop
computes the rules (`servicerules.build`, pure) and applies what changed since the last apply
as one transaction (`servicerules.delta`: map elements and the chains of the Services that
changed; `nft.Nft`). The first apply, one every `RESYNC` seconds (repairing anything changed
behind the proxy's back) and one after any failed apply write the table whole
(`servicerules.full`); the kernel's table is never listed. Applies run in a worker thread
(libnftables blocks) in the agent's network namespace.

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
import time

from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.informer import Informer
from k8py.net import servicerules
from k8py.net.nft import Nft, NftError

log = logging.getLogger(__name__)

SERVICES = builtin("v1", "services")
ENDPOINT_SLICES = builtin("discovery.k8s.io/v1", "endpointslices")
DEBOUNCE = 0.05
RESYNC = 60.0
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


class ServiceProxy:
    def __init__(self, client: Client, cluster_cidr: str, node: str = "",
                 nft: Nft | None = None, skip: set[str] | frozenset[str] = frozenset(),
                 informers: tuple[Informer, Informer] | None = None):
        self.cluster_cidr = cluster_cidr
        self.node = node
        self.skip = set(skip)  # addresses answered on the node itself (cluster DNS)
        self.nft = nft or Nft()
        # Services and EndpointSlices; given (and run) by the agent when others share them
        self.shared = informers is not None
        self.services, self.slices = informers or (Informer(client, SERVICES),
                                                   Informer(client, ENDPOINT_SLICES))
        self.stale = asyncio.Event()
        self.applied: servicerules.Ruleset | None = None
        self.ports: list[servicerules.ServicePort] = []  # what `applied` was built from
        self.applies = 0  # how many scripts went to the kernel

    def _changed(self, *_objects) -> None:
        self.stale.set()

    async def sync(self, force: bool = False) -> bool:
        """Apply what changed (everything with `force`); whether anything was applied. UDP
        flows to endpoints that went away are forgotten by conntrack afterwards."""
        ports = [p for p in servicerules.service_ports(self.services.list(),
                                                       self.slices.list())
                 if not self.skip.intersection(p.addresses)]
        rules = servicerules.build(ports, self.cluster_cidr, self.node)
        script = None
        if self.applied is not None and not force:
            script = servicerules.delta(self.applied, rules)
            if script == "":
                return False
        if script is None:
            script = servicerules.full(rules)
        self.applied = None  # unknown until the kernel took it
        await asyncio.to_thread(self.nft.run, script)
        self.applied = rules
        self.applies += 1
        stale = servicerules.stale_udp(self.ports, ports)
        self.ports = ports
        if stale:
            await asyncio.to_thread(forget_udp_flows, stale)
        return True

    async def run(self, ready: asyncio.Event | None = None) -> None:
        enable_kernel_settings()
        for informer in (self.services, self.slices):
            informer.add_handlers(self._changed, self._changed, self._changed)
        tasks = [] if self.shared else [asyncio.create_task(self.services.run()),
                                        asyncio.create_task(self.slices.run())]
        try:
            await self.services.synced.wait()
            await self.slices.synced.wait()
            await self._loop(ready)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, ready: asyncio.Event | None) -> None:
        last_full = 0.0
        delay = 1.0
        while True:
            force = time.monotonic() - last_full >= RESYNC
            self.stale.clear()
            try:
                started = time.monotonic()
                if await self.sync(force=force):
                    log.debug("service rules applied in %.0f ms",
                              (time.monotonic() - started) * 1000)
                if force:
                    last_full = time.monotonic()
                delay = 1.0
                if ready is not None:
                    ready.set()
            except NftError as exc:
                log.error("applying the service rules failed: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            try:
                await asyncio.wait_for(self.stale.wait(), RESYNC)
                await asyncio.sleep(DEBOUNCE)
            except asyncio.TimeoutError:
                pass
