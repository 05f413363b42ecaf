"""The Service proxy's nftables ruleset: a pure function of (Services, EndpointSlices, the
cluster CIDR), after kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go).

Everything lives in one table, `ip k8py`; nothing else on the host is touched. The script
`ruleset` returns replaces the table whole in one transaction (declare, delete, define), so a
reader never sees half a ruleset and the proxy never has to list the kernel's table.

    nat prerouting/output ─▶ services:
        ip daddr . proto . port  vmap @service-ips        (ClusterIPs, externalIPs,
                                                           LoadBalancer ingress IPs)
        local address: proto . port vmap @service-nodeports
    svc-<service port>: mark for masquerade what comes from outside the cluster CIDR; the
        ClientIP affinity sets; `numgen random mod N` over the endpoints
    ext-<service port> (NodePorts, external and LoadBalancer IPs): mark for masquerade, then
        the service chain
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

TABLE = "k8py"
MASQUERADE_MARK = 0x4000
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
DEFAULT_AFFINITY_SECONDS = 10800


@dataclasses.dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int


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
        for port in spec.get("ports") or []:
            protocol = PROTOCOLS.get(port.get("protocol", "TCP"))
            if protocol is None or not port.get("port"):
                continue
            ports.append(ServicePort(
                namespace, name, port.get("name", ""), protocol, int(port["port"]),
                cluster_ips, external, int(port.get("nodePort") or 0),
                _endpoints(by_service.get((namespace, name), ()), port.get("name", ""),
                           port.get("protocol", "TCP")),
                int(affinity)))
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
            target = Endpoint(addresses[0], int(number))
            if conditions.get("ready", True) is not False:
                ready.add(target)
            elif conditions.get("serving") and conditions.get("terminating"):
                terminating.add(target)
    return tuple(sorted(ready or terminating, key=lambda e: (e.ip, e.port)))


def ruleset(ports: Iterable[ServicePort], cluster_cidr: str) -> str:
    """The nft script that makes table `ip k8py` proxy `ports`, replacing what it held."""
    ports = list(ports)
    service_ips, node_ports, no_endpoints, no_endpoint_node_ports = [], [], [], []
    chains, sets = [], []
    for sp in ports:
        svc, ext = f"svc-{sp.chain_id}", f"ext-{sp.chain_id}"
        if not sp.endpoints:
            for ip in sp.addresses + sp.external:
                no_endpoints.append(f"{ip} . {sp.protocol} . {sp.port} : goto reject-service")
            if sp.node_port:
                no_endpoint_node_ports.append(f"{sp.protocol} . {sp.node_port} : "
                                              "goto reject-service")
            continue
        for ip in sp.addresses:
            service_ips.append(f"{ip} . {sp.protocol} . {sp.port} : goto {svc}")
        for ip in sp.external:
            service_ips.append(f"{ip} . {sp.protocol} . {sp.port} : goto {ext}")
        if sp.node_port:
            node_ports.append(f"{sp.protocol} . {sp.node_port} : goto {ext}")
        body = [f"ip saddr != {cluster_cidr} jump mark-for-masquerade"]
        endpoint_chains = []
        for index, endpoint in enumerate(sp.endpoints):
            ep = f"ep-{sp.chain_id}-{_chain_name(endpoint.ip)}-{endpoint.port}"
            endpoint_chains.append(ep)
            rules = [f"ip saddr {endpoint.ip} jump mark-for-masquerade"]
            if sp.affinity_seconds:
                affinity = f"affinity-{ep}"
                sets.append(_block(f"set {affinity}", [
                    "type ipv4_addr", "flags dynamic,timeout",
                    f"timeout {sp.affinity_seconds}s"]))
                body.append(f"ip saddr @{affinity} goto {ep}")
                rules.append(f"update @{affinity} {{ ip saddr }}")
            rules.append(f"meta l4proto {sp.protocol} dnat to {endpoint.ip}:{endpoint.port}")
            chains.append(_block(f"chain {ep}", rules))
        if len(endpoint_chains) == 1:
            body.append(f"goto {endpoint_chains[0]}")
        else:
            choices = ", ".join(f"{i} : goto {ep}" for i, ep in enumerate(endpoint_chains))
            body.append(f"numgen random mod {len(endpoint_chains)} vmap {{ {choices} }}")
        chains.append(_block(f"chain {svc}", body))
        if sp.external or sp.node_port:
            chains.append(_block(f"chain {ext}", ["jump mark-for-masquerade", f"goto {svc}"]))
    maps = [
        _map("service-ips", "ipv4_addr . inet_proto . inet_service", service_ips),
        _map("service-nodeports", "inet_proto . inet_service", node_ports),
        _map("no-endpoint-services", "ipv4_addr . inet_proto . inet_service", no_endpoints),
        _map("no-endpoint-nodeports", "inet_proto . inet_service", no_endpoint_node_ports),
    ]
    base = [
        _block("chain nat-prerouting", ["type nat hook prerouting priority dstnat; "
                                        "policy accept;", "jump services"]),
        _block("chain nat-output", ["type nat hook output priority -100; policy accept;",
                                    "jump services"]),
        _block("chain nat-postrouting", ["type nat hook postrouting priority srcnat; "
                                         "policy accept;", "jump masquerading"]),
        _block("chain masquerading", [
            # pods leaving the cluster network: the node's address (not between pods)
            f"ip saddr {cluster_cidr} ip daddr != {cluster_cidr} fib daddr type != local "
            "masquerade",
            f"meta mark & {MASQUERADE_MARK:#x} == 0 return",
            f"meta mark set meta mark ^ {MASQUERADE_MARK:#x}",
            "masquerade fully-random"]),
        _block("chain mark-for-masquerade", [f"meta mark set meta mark | "
                                             f"{MASQUERADE_MARK:#x}"]),
        _block("chain services", [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport "
            "vmap @service-nodeports"]),
        # before routing (a pod's packet to an address without a route is refused, not
        # "unreachable"), and the node's own connections
        _block("chain filter-prerouting", ["type filter hook prerouting priority -110; "
                                           "policy accept;",
                                           "ct state new jump endpoints-check"]),
        _block("chain filter-output", ["type filter hook output priority -110; "
                                       "policy accept;",
                                       "ct state new jump endpoints-check"]),
        _block("chain endpoints-check", [
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
            "fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports"]),
        _block("chain reject-service", ["meta l4proto tcp reject with tcp reset", "reject"]),
    ]
    body = "\n".join(maps + sets + base + chains)
    return (f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"
            f"table ip {TABLE} {{\n{body}}}\n")


def _block(head: str, lines: list[str]) -> str:
    inner = "".join(f"\t\t{line}\n" for line in lines)
    return f"\t{head} {{\n{inner}\t}}\n"


def _map(name: str, key: str, elements: list[str]) -> str:
    lines = [f"type {key} : verdict"]
    if elements:
        lines.append("elements = { " + ",\n\t\t\t".join(elements) + " }")
    return _block(f"map {name}", lines)


def removal() -> str:
    """The script that takes the table away (the agent's cleanup, `k8py-killall`)."""
    return f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"
