"""The root CA publisher: a ConfigMap `kube-root-ca.crt` with key `ca.crt` (the cluster CA)
in every namespace, as upstream's root-ca-cert-publisher keeps it, so pods can verify the API
server (projected service-account volumes mount it next to their token).

Recreated when deleted, put back when edited; namespaces being deleted are left alone.
"""

from __future__ import annotations

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.informer import split_key
from k8py.server.controllers.base import Controller

NAMESPACES = builtin("v1", "namespaces")
CONFIGMAPS = builtin("v1", "configmaps")
NAME = "kube-root-ca.crt"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using "
               "internal endpoints such as the internal service IP or kubernetes.default.svc. "
               "No other usage is guaranteed across distributions of Kubernetes clusters.")


class RootCAPublisher(Controller):
    name = "root-ca-cert-publisher"
    service_account = "root-ca-cert-publisher"
    workers = 1

    def setup(self) -> None:
        self.namespaces = self.informer(NAMESPACES)
        self.namespaces.add_handlers(self.enqueue_object,
                                     lambda old, new: self.enqueue_object(new))
        self.configmaps = self.informer(CONFIGMAPS)
        self.configmaps.add_handlers(None, lambda old, new: self._configmap_changed(new),
                                     self._configmap_changed)

    def _configmap_changed(self, configmap: dict) -> None:
        if configmap["metadata"]["name"] == NAME:
            self.enqueue(configmap["metadata"]["namespace"])

    async def reconcile(self, key: str) -> float | None:
        _, namespace_name = split_key(key)
        namespace = self.namespaces.get(namespace_name)
        bundle = self.settings.ca_bundle
        if namespace is None or namespace["metadata"].get("deletionTimestamp") or not bundle:
            return None
        current = self.configmaps.get_by_name(namespace_name, NAME)
        wanted = {"ca.crt": bundle}
        if current is None:
            try:
                await self.client.create(CONFIGMAPS, {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": NAME, "namespace": namespace_name,
                                 "annotations": {"kubernetes.io/description": DESCRIPTION}},
                    "data": wanted})
            except errors.AlreadyExists:
                pass  # the cache was behind; the update event brings us back if needed
            except errors.Forbidden:
                pass  # the namespace began terminating meanwhile
        elif current.get("data") != wanted:
            await self.client.update(CONFIGMAPS, {**current, "data": wanted})
        return None
