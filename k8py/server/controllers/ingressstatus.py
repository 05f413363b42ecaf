"""`status.loadBalancer` of the Ingresses the built-in ingress controller serves.

Every agent answers Ingresses on its node's ports 80 and 443 (`k8py.net.ingress`) and
announces them on its Node (`PORTS_ANNOTATION`), so an Ingress of the `k8py.io/ingress`
controller (its class, or none while that class is the default) is reachable, as Traefik's
Ingresses are in k3s, at the addresses ServiceLB would give its Service: the InternalIP of
every Ready node running the ingress (among the nodes labelled
`svccontroller.k8py.io/enablelb=true` when any is), each with the port it serves HTTP on,
and HTTPS when the Ingress has TLS. One writer on the server rather than one per agent:
agents would race each other over the same list. An Ingress that stops being ours loses the
status it was given.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.informer import split_key
from k8py.server.controllers.base import Controller
from k8py.net.ingress import announced_ports
from k8py.server.controllers.servicelb import node_address, serving_nodes

INGRESSES = builtin("networking.k8s.io/v1", "ingresses")
INGRESS_CLASSES = builtin("networking.k8s.io/v1", "ingressclasses")
NODES = builtin("v1", "nodes")
CONTROLLER = "k8py.io/ingress"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"


class IngressStatusController(Controller):
    name = "ingress-status"
    service_account = "ingress-status-controller"
    workers = 1

    def setup(self) -> None:
        self.ingresses = self.informer(INGRESSES)
        self.classes = self.informer(INGRESS_CLASSES)
        self.nodes = self.informer(NODES)
        self.ingresses.add_handlers(self.enqueue_object,
                                    lambda old, new: self.enqueue_object(new))
        for informer in (self.classes, self.nodes):
            informer.add_handlers(self._all, lambda old, new: self._all(), self._all)

    def _all(self, *_objects: Any) -> None:
        for ingress in self.ingresses.list():
            self.enqueue_object(ingress)

    def _ours(self, ingress: dict[str, Any]) -> bool:
        names, default = set(), False
        for item in self.classes.list():
            if (item.get("spec") or {}).get("controller") == CONTROLLER:
                names.add(item["metadata"]["name"])
                default |= (item["metadata"].get("annotations") or {}).get(
                    DEFAULT_CLASS_ANNOTATION) == "true"
        cls = (ingress.get("spec") or {}).get("ingressClassName") or \
            (ingress["metadata"].get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
        return cls in names if cls else default

    async def reconcile(self, key: str) -> float | None:
        namespace, name = split_key(key)
        ingress = self.ingresses.get_by_name(namespace, name)
        if ingress is None:
            return None
        wanted: list[dict[str, Any]] = []
        if self._ours(ingress) and not ingress["metadata"].get("deletionTimestamp"):
            tls = bool((ingress.get("spec") or {}).get("tls"))
            for node in serving_nodes(self.nodes.list()):
                announced = announced_ports(node)
                ports = [{"port": announced[scheme], "protocol": "TCP"}
                         for scheme in ("http", "https") if scheme in announced
                         and (scheme == "http" or tls)]
                if ports:
                    wanted.append({"ip": node_address(node), "ports": ports})
        current = ((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if (current or []) == wanted:
            return None
        try:
            await self.client.patch(INGRESSES, name, {"status": {"loadBalancer": {
                "ingress": wanted or None}}}, namespace, subresource="status")
        except errors.NotFound:
            pass
        return None
