"""LoadBalancer Services on the nodes' own addresses, as k3s's ServiceLB (klipper-lb) does,
without its pods: every agent's proxy already answers on the addresses a Service's
`status.loadBalancer.ingress` lists (`k8py.net.servicerules`).

A Service of type LoadBalancer without a `loadBalancerClass` gets, as ingress, the
InternalIP of every Ready node, or of the nodes labelled `svccontroller.k8py.io/enablelb=true`
when any node carries that label (k3s's `svccontroller.k3s.cattle.io/enablelb`). A port
(protocol and number) already served that way by another LoadBalancer Service leaves the
later one (by creation time, then name) pending, with a Warning Event that says which one
holds it. The built-in ingress controller holds its ports (80 and 443 by default, TCP) on
the nodes that announce them (`k8py.net.ingress.PORTS_ANNOTATION`), as Traefik's ServiceLB
pods hold them in k3s: a Service asking for one of those ports is given only the other
nodes' addresses, and stays pending with a Warning Event when no node is left. Services of
other types, or with a class, are left alone; a Service that stops being a LoadBalancer
loses the ingress it was given.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.informer import key_of, split_key
from k8py.net.ingress import announced_ports
from k8py.server.controllers.base import Controller

SERVICES = builtin("v1", "services")
NODES = builtin("v1", "nodes")
ENABLE_LABEL = "svccontroller.k8py.io/enablelb"


def _ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or ())


def node_address(node: dict[str, Any]) -> str | None:
    for address in (node.get("status") or {}).get("addresses") or ():
        if address.get("type") == "InternalIP" and ":" not in address.get("address", ""):
            return address["address"]
    return None


def serving_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Ready nodes with an address LoadBalancers are served on, by address."""
    chosen = [n for n in nodes if (n["metadata"].get("labels") or {}).get(ENABLE_LABEL)
              == "true"]
    if not any((n["metadata"].get("labels") or {}).get(ENABLE_LABEL) for n in nodes):
        chosen = nodes
    by_address = {a: n for n in chosen if _ready(n) and (a := node_address(n))}
    return [by_address[a] for a in sorted(
        by_address, key=lambda ip: tuple(int(part) for part in ip.split(".")))]


def _ingress_ports(node: dict[str, Any]) -> set[tuple[str, int]]:
    return {("TCP", port) for port in announced_ports(node).values()}


def _ports(service: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p.get("port")) for p in
            (service.get("spec") or {}).get("ports") or () if p.get("port")}


def _handled(service: dict[str, Any]) -> bool:
    spec = service.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass") \
        and not service["metadata"].get("deletionTimestamp")


class ServiceLoadBalancer(Controller):
    name = "service-lb"
    service_account = "service-lb-controller"
    workers = 1

    def setup(self) -> None:
        self.services = self.informer(SERVICES)
        self.nodes = self.informer(NODES)
        self.services.add_handlers(self.enqueue_object,
                                   lambda old, new: self.enqueue_object(new),
                                   self._gone)
        self.nodes.add_handlers(self._all, lambda old, new: self._all(), self._all)

    def _all(self, *_nodes) -> None:
        for service in self.services.list():
            if _handled(service) or (service.get("status") or {}).get("loadBalancer"):
                self.enqueue_object(service)

    def _gone(self, service: dict[str, Any]) -> None:
        if _handled(service):
            self._all()  # a port it held may be free now

    def _holder(self, service: dict[str, Any]) -> dict[str, Any] | None:
        """The earlier LoadBalancer Service already serving one of this one's ports."""
        mine = _ports(service)
        order = (service["metadata"].get("creationTimestamp", ""), key_of(service))
        for other in self.services.list():
            if other is service or key_of(other) == key_of(service) or not _handled(other):
                continue
            if (other["metadata"].get("creationTimestamp", ""), key_of(other)) < order \
                    and mine & _ports(other):
                return other
        return None

    async def reconcile(self, key: str) -> float | None:
        namespace, name = split_key(key)
        service = self.services.get_by_name(namespace, name)
        if service is None:
            return None
        wanted: list[dict[str, str]] = []
        if _handled(service):
            holder = self._holder(service)
            if holder is not None:
                port = sorted(_ports(service) & _ports(holder))[0]
                await self.record(SERVICES, service, "Warning", "PortInUse",
                                  f"port {port[1]}/{port[0]} is served for Service "
                                  f"{key_of(holder)} on the nodes' addresses already")
            else:
                wanted, taken = [], set()
                for node in serving_nodes(self.nodes.list()):
                    clash = _ports(service) & _ingress_ports(node)
                    if clash:
                        taken |= clash
                    else:
                        wanted.append({"ip": node_address(node), "ipMode": "VIP"})
                if not wanted and taken:
                    port = sorted(taken)[0]
                    await self.record(SERVICES, service, "Warning", "PortInUse",
                                      f"port {port[1]}/{port[0]} is served by the ingress "
                                      "controller on the nodes' addresses already")
        current = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if (current or []) == wanted:
            return None
        try:
            await self.client.patch(SERVICES, name, {"status": {"loadBalancer": {
                "ingress": wanted or None}}}, namespace, subresource="status")
        except errors.NotFound:
            pass
        return None
