"""NetworkPolicy (networking.k8s.io/v1) as nftables rules: a pure function of (policies, pods,
namespaces, this node), in a table of its own, `ip k8py-policy` (kube-router's job in k3s,
there with iptables and ipsets).

Each node enforces the policies of the pods it runs, ingress and egress, where their packets
cross it: the forward hook, after the Service proxy's DNAT (so a policy sees the endpoint a
Service chose, as upstream) and before masquerading (so it sees the client's address).

    forward, priority -2: egress-check            forward, priority -1: ingress-check
        ct state established,related accept           (the same, with ip daddr and
        ip saddr vmap @egress-pods                      @ingress-pods)
                 │ this node's pods isolated for egress: goto egress-pod-<address>
    egress-pod-<address>: jump egress_<ns>_<policy>, for each policy that selects the
        pod and allows something; then goto deny
    egress_<ns>_<policy>: <peer> <port> accept      (one rule per peer and port)

A new connection visits only the policies that select its pod (not every policy of the
namespace). A node holds only the policies of the pods it runs.

An `accept` ends only the base chain it is in, so a packet between two isolated pods of
this node passes the egress check of one and then the ingress check of the other. What is
not allowed is refused at once (a TCP reset, or ICMP port unreachable; kube-router rejects
too), never left to time out. Replies to allowed connections pass (conntrack); the node's
own traffic to its pods (kubelet probes) never crosses the forward hook, nor does a pod's
traffic to its own node (cluster DNS), so neither is ever filtered; hostNetwork pods are
not isolated.

Peers: podSelector (the policy's namespace), namespaceSelector, both (ANDed), each a set of
pod addresses that changes element by element as pods come and go; ipBlock as `ip saddr
CIDR ip saddr != { except }` in its own rule, so an except only narrows its own block.
Ports: a number, a range (`endPort`), a protocol alone, or a name: named ports become a set
of (address . protocol . port) of the pods that define that name (for ingress the selected
pods, for egress every pod), so one rule covers pods that number it differently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

from k8py.api.selectors import selector_matches
from k8py.net import nftscript
from k8py.net.nftscript import Set, Table, verdict_map

TABLE = "k8py-policy"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
MAX_NAME = 200  # nft allows 256 for chains and sets; room for the suffixes
DIRECTIONS = {  # policyType: (spec field, peers field, the peer's address)
    "Ingress": ("ingress", "from", "saddr"),
    "Egress": ("egress", "to", "daddr"),
}


@dataclasses.dataclass(frozen=True)
class Pod:
    """What policies need of a pod: who it is, where, and its named ports."""
    namespace: str
    labels: Mapping[str, str]
    ip: str
    node: str
    named_ports: tuple[tuple[str, str, int], ...]  # (name, protocol, number)


def pod_of(obj: Mapping[str, Any]) -> Pod | None:
    """The policy view of a pod; None for a pod policies do not see: one without an
    address yet, one that has finished, one on the host's network."""
    metadata, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    status = obj.get("status") or {}
    ip = status.get("podIP") or next(
        (p.get("ip") for p in status.get("podIPs") or () if p.get("ip")), None)
    if not ip or ":" in ip or spec.get("hostNetwork") or \
            status.get("phase") in ("Succeeded", "Failed"):
        return None
    ports = tuple(sorted(
        (port["name"], port.get("protocol", "TCP"), int(port["containerPort"]))
        for container in spec.get("containers") or ()
        for port in container.get("ports") or ()
        if port.get("name") and port.get("containerPort")))
    return Pod(metadata.get("namespace", ""), metadata.get("labels") or {}, ip,
               spec.get("nodeName") or "", ports)


def build(policies: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
          namespaces: Iterable[Mapping[str, Any]], node: str) -> Table:
    """The rules that enforce `policies` for the pods of node `node`."""
    view = _ClusterView([p for p in map(pod_of, pods) if p is not None], {
        (n.get("metadata") or {}).get("name", ""): (n.get("metadata") or {}).get("labels") or {}
        for n in namespaces})
    sets: dict[str, Set] = {}
    chains: dict[str, tuple[str, ...]] = {}
    # (policyType, address of a pod of this node it isolates) -> the chains that may allow
    isolating: dict[tuple[str, str], list[str]] = {}
    ordered = sorted(policies, key=lambda p: (p["metadata"].get("namespace", ""),
                                              p["metadata"]["name"]))
    for policy in ordered:
        namespace = policy["metadata"].get("namespace", "")
        spec = policy.get("spec") or {}
        targets = [p for p in view.in_namespace(namespace)
                   if p.node == node and selector_matches(spec.get("podSelector") or {},
                                                          p.labels)]
        if not targets:
            continue  # none of its pods runs here: other nodes enforce it
        for policy_type in _policy_types(spec):
            direction = DIRECTIONS[policy_type][0]
            chain = _name(f"{direction}_{namespace}_{policy['metadata']['name']}")
            rules = []
            for i, rule in enumerate(spec.get(direction) or []):
                rules += _rule_lines(policy_type, chain, i, rule or {}, namespace, targets,
                                     view, sets)
            if rules:
                chains[chain] = tuple(rules)
            for pod in targets:
                # a policy that allows nothing only isolates: no chain to visit
                isolating.setdefault((policy_type, pod.ip), []).extend([chain] if rules else [])
    isolated: dict[str, dict[str, str]] = {"Ingress": {}, "Egress": {}}
    for (policy_type, ip), allowing in isolating.items():
        pod_chain = f"{DIRECTIONS[policy_type][0]}-pod-{ip}"
        chains[pod_chain] = (*(f"jump {chain}" for chain in allowing), "goto deny")
        isolated[policy_type][ip] = f"goto {pod_chain}"
    maps = {
        "egress-pods": verdict_map("ipv4_addr", _by_address(isolated["Egress"])),
        "ingress-pods": verdict_map("ipv4_addr", _by_address(isolated["Ingress"])),
    }
    return Table(TABLE, {**maps, **dict(sorted(sets.items()))}, BASE, chains)


BASE = {
    "egress-check": ("type filter hook forward priority -2; policy accept;",
                     "ct state established,related accept",
                     "ip saddr vmap @egress-pods"),
    "ingress-check": ("type filter hook forward priority -1; policy accept;",
                      "ct state established,related accept",
                      "ip daddr vmap @ingress-pods"),
    # refused at once: a TCP reset (an ICMP error leaves a TCP client retrying for a
    # second), ICMP port unreachable for the rest
    "deny": ("meta l4proto tcp reject with tcp reset", "reject"),
}


def _policy_types(spec: Mapping[str, Any]) -> list[str]:
    types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress")
                                                       else []))
    return [t for t in ("Ingress", "Egress") if t in types]


def _rule_lines(policy_type: str, chain: str, index: int, rule: Mapping[str, Any],
                namespace: str, targets: list[Pod], view: _ClusterView,
                sets: dict[str, Set]) -> list[str]:
    """One `accept` per (peer, port) of one ingress or egress rule."""
    _, peers_field, peer_address = DIRECTIONS[policy_type]
    peers: list[str] = []
    for j, peer in enumerate(rule.get(peers_field) or ()):
        if peer.get("ipBlock"):
            match = _ip_block(peer["ipBlock"], peer_address)
            if match:
                peers.append(match)
        elif "podSelector" in peer or "namespaceSelector" in peer:
            name = f"{chain}_{index}_{peers_field}_{j}"
            sets[name] = _address_set(p.ip for p in view.select(peer, namespace))
            peers.append(f"ip {peer_address} @{name}")
    if not rule.get(peers_field):
        peers = [""]  # any source (ingress) or destination (egress)
    ports: list[str] = []
    for k, port in enumerate(rule.get("ports") or ()):
        protocol = PROTOCOLS.get(port.get("protocol") or "TCP")
        number = port.get("port")
        if protocol is None:
            continue
        if number is None:
            ports.append(f"meta l4proto {protocol}")
        elif isinstance(number, int) or str(number).isdigit():
            end = port.get("endPort")
            span = f"{number}-{end}" if end and int(end) > int(number) else f"{number}"
            ports.append(f"meta l4proto {protocol} th dport {span}")
        else:
            # a name: the destination's own number for it (the selected pods for ingress,
            # any pod for egress)
            name = f"{chain}_{index}_port_{k}"
            holders = targets if policy_type == "Ingress" else view.pods
            sets[name] = Set(("type ipv4_addr . inet_proto . inet_service",), tuple(sorted(
                f"{pod.ip} . {protocol} . {number_}" for pod in holders
                for (port_name, port_protocol, number_) in pod.named_ports
                if port_name == number and PROTOCOLS.get(port_protocol) == protocol)))
            ports.append(f"ip daddr . meta l4proto . th dport @{name}")
    if not rule.get("ports"):
        ports = [""]  # any port
    return [" ".join(filter(None, (peer, port, "accept"))) for peer in peers for port in ports]


def _ip_block(block: Mapping[str, Any], address: str) -> str | None:
    try:
        cidr = ipaddress.ip_network(block.get("cidr", ""), strict=False)
        excepts = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or ()]
    except ValueError:
        return None  # validation refuses these; nothing to match
    if cidr.version != 4:
        return None  # an IPv4 cluster: no packet of ours matches
    match = f"ip {address} {cidr}"
    excepts = [e for e in excepts if e.version == 4]
    if excepts:
        match += f" ip {address} != {{ {', '.join(str(e) for e in excepts)} }}"
    return match


class _ClusterView:
    """Pods by namespace and namespaces' labels, with the selections memoised: many
    policies ask the same question."""

    def __init__(self, pods: list[Pod], namespace_labels: dict[str, Mapping[str, str]]):
        self.pods = sorted(pods, key=lambda p: ipaddress.IPv4Address(p.ip))
        self.namespace_labels = namespace_labels
        self._by_namespace: dict[str, list[Pod]] = {}
        for pod in self.pods:
            self._by_namespace.setdefault(pod.namespace, []).append(pod)
        self._selected: dict[str, list[Pod]] = {}

    def in_namespace(self, namespace: str) -> list[Pod]:
        return self._by_namespace.get(namespace, [])

    def select(self, peer: Mapping[str, Any], namespace: str) -> list[Pod]:
        """The pods a podSelector/namespaceSelector peer of a policy in `namespace` means."""
        key = json.dumps([peer.get("podSelector"), peer.get("namespaceSelector"),
                          namespace if "namespaceSelector" not in peer else None],
                         sort_keys=True)
        if key not in self._selected:
            if "namespaceSelector" in peer:
                selector = peer.get("namespaceSelector") or {}
                candidates = [p for name, labels in self.namespace_labels.items()
                              if selector_matches(selector, labels)
                              for p in self.in_namespace(name)]
            else:
                candidates = self.in_namespace(namespace)
            pod_selector = peer.get("podSelector") or {}
            self._selected[key] = [p for p in candidates
                                   if selector_matches(pod_selector, p.labels)]
        return self._selected[key]


def _address_set(addresses: Iterable[str]) -> Set:
    return Set(("type ipv4_addr",), tuple(sorted(set(addresses), key=ipaddress.IPv4Address)))


def _by_address(elements: dict[str, str]) -> dict[str, str]:
    return {ip: elements[ip] for ip in sorted(elements, key=ipaddress.IPv4Address)}


def _name(text: str) -> str:
    """A chain or set name: within nft's limit, still unique."""
    if len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[:MAX_NAME - 17]}_{digest}"


def removal() -> str:
    """The script that takes the table away (for a host's cleanup)."""
    return nftscript.removal(TABLE)
