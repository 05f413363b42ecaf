"""The Service proxy's nftables ruleset: a pure function of (Services, EndpointSlices, the
cluster CIDR), after kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go).

Everything lives in one table, `ip k8py`; nothing else on the host is touched. `build` makes
the rules as data (an `nftscript.Table`); `nftscript.full` writes a script that replaces the
table whole in one transaction, `nftscript.delta` one that changes only what differs (map
elements, the chains of the Services that changed), so a reader never sees half a ruleset
and the proxy never has to list the kernel's table.

    nat prerouting/output ─▶ services:
        ip daddr . proto . port  vmap @service-ips        (ClusterIPs, externalIPs,
                                                           LoadBalancer ingress IPs)
        local address: proto . port vmap @service-nodeports
    svc-<service port>: mark for masquerade what comes from outside the cluster CIDR; the
        ClientIP affinity sets; `numgen random mod N` over the endpoints (this node's only
        with internalTrafficPolicy Local; none: drop)
    ext-<service port> (NodePorts, external and LoadBalancer IPs): mark for masquerade, then
        the service chain; with externalTrafficPolicy Local, no masquerade (the client's
        address is kept) and this node's endpoints only (none: drop), while pods and the node
        itself still reach the service chain
    ep-<service port>-<endpoint>: hairpin (a pod reaching itself through its Service) marked
        for masquerade; `dnat to ip:port`
    nat postrouting: masquerade what is marked (mark 0x4000), and pod traffic leaving the
        cluster CIDR; traffic between pods keeps its addresses
    filter (prerouting, output): a Service port without endpoints is rejected at once
        (connection refused: a TCP reset), not left to time out

Endpoints: the ready ones of the Service's EndpointSlices (`kubernetes.io/service-name`),
falling back to the serving-and-terminating ones when none is ready, as upstream.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from k8py.net import nftscript
from k8py.net.nftscript import Set, Table, full, verdict_map

TABLE = "k8py"
MASQUERADE_MARK = 0x4000
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
DEFAULT_AFFINITY_SECONDS = 10800


@dataclasses.dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str = ""  # the node it runs on (EndpointSlice `nodeName`)


@dataclasses.dataclass(frozen=True)
class ServicePort:
    """One port of one Service, with what reaches it and where it goes."""
    namespace: str
    name: str
    port_name: str
    protocol: str  # tcp, udp, sctp
    port: int
    addresses: tuple[str, ...]  # ClusterIPs
    external: tuple[str, ...] = ()  # externalIPs and LoadBalancer ingress IPs
    node_port: int = 0
    endpoints: tuple[Endpoint, ...] = ()
    affinity_seconds: int = 0  # ClientIP session affinity; 0: none
    external_local: bool = False  # externalTrafficPolicy Local (NodePort, LoadBalancer)
    internal_local: bool = False  # internalTrafficPolicy Local

    @property
    def chain_id(self) -> str:
        return _chain_name(f"{self.namespace}/{self.name}/{self.port_name}/{self.protocol}")


def _chain_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text.replace("/", "-"))


def service_ports(services: Iterable[Mapping[str, Any]],
                  slices: Iterable[Mapping[str, Any]]) -> list[ServicePort]:
    """The proxied ports of `services`, each with its endpoints from `slices`."""
    by_service: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for item in slices:
        metadata = item.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner and item.get("addressType", "IPv4") == "IPv4":
            by_service.setdefault((metadata.get("namespace", ""), owner), []).append(item)
    ports = []
    for service in services:
        metadata, spec = service.get("metadata") or {}, service.get("spec") or {}
        if spec.get("type") == "ExternalName":
            continue
        cluster_ips = tuple(ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]
                            if ip and ip != "None" and ":" not in ip)
        if not cluster_ips:
            continue  # headless: DNS only
        namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
        external = tuple(spec.get("externalIPs") or ()) + tuple(
            i["ip"] for i in ((service.get("status") or {}).get("loadBalancer") or {}).get(
                "ingress") or () if i.get("ip"))
        affinity = 0
        if spec.get("sessionAffinity") == "ClientIP":
            affinity = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
                "timeoutSeconds") or DEFAULT_AFFINITY_SECONDS
        external_local = spec.get("externalTrafficPolicy") == "Local" and \
            spec.get("type") in ("NodePort", "LoadBalancer")
        for port in spec.get("ports") or []:
            protocol = PROTOCOLS.get(port.get("protocol", "TCP"))
            if protocol is None or not port.get("port"):
                continue
            ports.append(ServicePort(
                namespace, name, port.get("name", ""), protocol, int(port["port"]),
                cluster_ips, external, int(port.get("nodePort") or 0),
                _endpoints(by_service.get((namespace, name), ()), port.get("name", ""),
                           port.get("protocol", "TCP")),
                int(affinity), external_local,
                spec.get("internalTrafficPolicy") == "Local"))
    return sorted(ports, key=lambda p: (p.namespace, p.name, p.port_name, p.protocol))


def _endpoints(slices: Iterable[Mapping[str, Any]], port_name: str,
               protocol: str) -> tuple[Endpoint, ...]:
    ready, terminating = set(), set()
    for item in slices:
        number = next((p.get("port") for p in item.get("ports") or []
                       if p.get("name", "") == port_name
                       and p.get("protocol", "TCP") == protocol), None)
        if not number:
            continue
        for endpoint in item.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            conditions = endpoint.get("conditions") or {}
            target = Endpoint(addresses[0], int(number), endpoint.get("nodeName") or "")
            if conditions.get("ready", True) is not False:
                ready.add(target)
            elif conditions.get("serving") and conditions.get("terminating"):
                terminating.add(target)
    return tuple(sorted(ready or terminating, key=lambda e: (e.ip, e.port)))


MAP_TYPES = {
    "service-ips": "ipv4_addr . inet_proto . inet_service",
    "service-nodeports": "inet_proto . inet_service",
    "no-endpoint-services": "ipv4_addr . inet_proto . inet_service",
    "no-endpoint-nodeports": "inet_proto . inet_service",
}


def build(ports: Iterable[ServicePort], cluster_cidr: str, node: str = "") -> Table:
    """The rules that proxy `ports` on node `node` (pure; the node matters for the
    traffic policies that keep traffic on the node: `Local`)."""
    maps: dict[str, dict[str, str]] = {name: {} for name in MAP_TYPES}
    chains: dict[str, tuple[str, ...]] = {}
    sets: dict[str, Set] = {}
    for sp in ports:
        svc, ext = f"svc-{sp.chain_id}", f"ext-{sp.chain_id}"
        if not sp.endpoints:
            for ip in sp.addresses + sp.external:
                maps["no-endpoint-services"][f"{ip} . {sp.protocol} . {sp.port}"] = \
                    "goto reject-service"
            if sp.node_port:
                maps["no-endpoint-nodeports"][f"{sp.protocol} . {sp.node_port}"] = \
                    "goto reject-service"
            continue
        for ip in sp.addresses:
            maps["service-ips"][f"{ip} . {sp.protocol} . {sp.port}"] = f"goto {svc}"
        for ip in sp.external:
            maps["service-ips"][f"{ip} . {sp.protocol} . {sp.port}"] = f"goto {ext}"
        if sp.node_port:
            maps["service-nodeports"][f"{sp.protocol} . {sp.node_port}"] = f"goto {ext}"
        body = [f"ip saddr != {cluster_cidr} jump mark-for-masquerade"]
        endpoint_chains, local_chains = [], []
        for endpoint in sp.endpoints:
            ep = f"ep-{sp.chain_id}-{_chain_name(endpoint.ip)}-{endpoint.port}"
            endpoint_chains.append(ep)
            rules = [f"ip saddr {endpoint.ip} jump mark-for-masquerade"]
            if sp.affinity_seconds:
                affinity = f"affinity-{ep}"
                sets[affinity] = Set(("type ipv4_addr", "flags dynamic,timeout",
                                      f"timeout {sp.affinity_seconds}s"))
                body.append(f"ip saddr @{affinity} goto {ep}")
                rules.append(f"update @{affinity} {{ ip saddr }}")
            rules.append(f"meta l4proto {sp.protocol} dnat to {endpoint.ip}:{endpoint.port}")
            chains[ep] = tuple(rules)
            if endpoint.node == node:
                local_chains.append(ep)
        body.append(_choose(local_chains if sp.internal_local else endpoint_chains))
        chains[svc] = tuple(body)
        if (sp.external or sp.node_port) and sp.external_local:
            # the client's address is kept, so only this node's endpoints may answer; pods
            # and the node itself still reach every endpoint (upstream's short circuit)
            local = f"local-{sp.chain_id}"
            chains[ext] = (f"ip saddr {cluster_cidr} goto {svc}",
                           "fib saddr type local jump mark-for-masquerade",
                           f"fib saddr type local goto {svc}",
                           f"goto {local}")
            chains[local] = (_choose(local_chains),)
        elif sp.external or sp.node_port:
            chains[ext] = ("jump mark-for-masquerade", f"goto {svc}")
    return Table(TABLE, {**{name: verdict_map(MAP_TYPES[name], elements)
                            for name, elements in maps.items()}, **sets},
                 _base(cluster_cidr), chains)


def _choose(endpoint_chains: list[str]) -> str:
    """The rule that picks one endpoint at random; none: the packet is dropped."""
    if not endpoint_chains:
        return "drop"
    if len(endpoint_chains) == 1:
        return f"goto {endpoint_chains[0]}"
    choices = ", ".join(f"{i} : goto {ep}" for i, ep in enumerate(endpoint_chains))
    return f"numgen random mod {len(endpoint_chains)} vmap {{ {choices} }}"


def _base(cluster_cidr: str) -> dict[str, tuple[str, ...]]:
    return {
        "nat-prerouting": ("type nat hook prerouting priority dstnat; policy accept;",
                           "jump services"),
        "nat-output": ("type nat hook output priority -100; policy accept;",
                       "jump services"),
        "nat-postrouting": ("type nat hook postrouting priority srcnat; policy accept;",
                            "jump masquerading"),
        "masquerading": (
            # pods leaving the cluster network: the node's address (not between pods)
            f"ip saddr {cluster_cidr} ip daddr != {cluster_cidr} fib daddr type != local "
            "masquerade",
            f"meta mark & {MASQUERADE_MARK:#x} == 0 return",
            f"meta mark set meta mark ^ {MASQUERADE_MARK:#x}",
            "masquerade fully-random"),
        "mark-for-masquerade": (f"meta mark set meta mark | {MASQUERADE_MARK:#x}",),
        "services": (
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport "
            "vmap @service-nodeports"),
        # before routing (a pod's packet to an address without a route is refused, not
        # "unreachable"), and the node's own connections
        "filter-prerouting": ("type filter hook prerouting priority -110; policy accept;",
                              "ct state new jump endpoints-check"),
        "filter-output": ("type filter hook output priority -110; policy accept;",
                          "ct state new jump endpoints-check"),
        "endpoints-check": (
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
            "fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports"),
        "reject-service": ("meta l4proto tcp reject with tcp reset", "reject"),
    }


def ruleset(ports: Iterable[ServicePort], cluster_cidr: str, node: str = "") -> str:
    """The nft script that makes table `ip k8py` proxy `ports`, replacing what it held."""
    return full(build(ports, cluster_cidr, node))


def removal() -> str:
    """The script that takes the table away (for a host's cleanup)."""
    return nftscript.removal(TABLE)


def stale_udp(old: Iterable[ServicePort], new: Iterable[ServicePort]
              ) -> set[tuple[str, str, int]]:
    """(service address, endpoint address, service port) of UDP flows whose endpoint is
    gone: their conntrack entries would keep sending to it (UDP has no connection to end)."""
    current = {(p.namespace, p.name, p.port_name, p.protocol): p for p in new}
    stale = set()
    for port in old:
        if port.protocol != "udp":
            continue
        kept = current.get((port.namespace, port.name, port.port_name, port.protocol))
        remaining = {e.ip for e in kept.endpoints} if kept else set()
        for endpoint in port.endpoints:
            if endpoint.ip not in remaining:
                for address in port.addresses + port.external:
                    stale.add((address, endpoint.ip, port.port))
    return stale
