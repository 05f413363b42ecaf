"""`status.loadBalancer` of the Ingresses the built-in ingress controller serves.

Every agent answers Ingresses on its node's ports 80 and 443 (`k8py.net.ingress`), so an
Ingress of the `k8py.io/ingress` controller (its class, or none while that class is the
default) is reachable at the same addresses the ServiceLB controller gives LoadBalancer
Services: the InternalIP of every Ready node (or of the nodes labelled
`svccontroller.k8py.io/enablelb=true`), each with the ports `80/TCP` and `443/TCP` when it
has TLS. One writer on the server rather than one per agent: agents would race each other
over the same list. An Ingress that stops being ours loses the status it was given.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.informer import split_key
from k8py.server.controllers.base import Controller
from k8py.server.controllers.servicelb import ingress_addresses

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
            ports = [{"port": 80, "protocol": "TCP"}]
            if (ingress.get("spec") or {}).get("tls"):
                ports.append({"port": 443, "protocol": "TCP"})
            wanted = [{"ip": ip, "ports": ports}
                      for ip in ingress_addresses(self.nodes.list())]
        current = ((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if (current or []) == wanted:
            return None
        try:
            await self.client.patch(INGRESSES, name, {"status": {"loadBalancer": {
                "ingress": wanted or None}}}, namespace, subresource="status")
        except errors.NotFound:
            pass
        return None
