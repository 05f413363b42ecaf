"""EndpointSlices (discovery.k8s.io/v1; upstream's endpointslice controller): the pods a
Service selects, in slices of at most 100 endpoints.

Per service with a selector (not ExternalName): every selected pod with an IP that has not
finished for good, terminating ones included, becomes an endpoint with its address,
conditions (`serving`: the pod is Ready; `terminating`: it is being deleted; `ready`: serving
and not terminating, or always with `publishNotReadyAddresses`), `nodeName`, `zone` (the
node's `topology.kubernetes.io/zone`), `hostname` (pod subdomain = service) and a `targetRef`.
Endpoints with the same ports share slices; a service that selects nothing keeps one empty
placeholder slice, as upstream.

Slices are named `<service>-<random>`, labelled `kubernetes.io/service-name` and
`endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io` (plus the service's
labels), and owned by the service (controller ownerReference); slices managed by anyone else
are ignored. Per reconcile the wanted slices are matched to the existing ones port set by port
set: existing slices are rewritten only if they differ, missing ones created, surplus ones
deleted. Because a created slice has a generated name, a reconcile waits until the cache has
seen this controller's previous writes for the service before it counts slices again (upstream's
endpointSliceTracker), so a stale cache never produces duplicates.
"""

from __future__ import annotations

import time
from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.informer import by_label, split_key
from k8py.server.controllers.base import is_pod_ready, owner_reference
from k8py.server.controllers.endpoints import (ServicePodsController, has_selector,
                                               hostname_of, ports_for, selected_pods,
                                               service_labels, should_be_in_endpoints,
                                               target_ref)

SLICES = builtin("discovery.k8s.io/v1", "endpointslices")
NODES = builtin("v1", "nodes")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS = 100
ZONE_LABEL = "topology.kubernetes.io/zone"
TRACKER_TIMEOUT = 10.0


class EndpointSliceController(ServicePodsController):
    name = "endpointslice"
    service_account = "endpointslice-controller"
    workers = 4

    def setup(self) -> None:
        super().setup()
        self.nodes = self.informer(NODES)
        self.slices = self.informer(SLICES)
        self.slices.add_index("service", by_label(SERVICE_NAME_LABEL))
        self.slices.add_handlers(self._slice_changed, lambda old, new: self._slice_changed(new),
                                 self._slice_changed)
        # service key → ({slice name: resourceVersion written, or None once deleted}, since)
        self._written: dict[str, tuple[dict[str, int | None], float]] = {}

    def _slice_changed(self, item: dict[str, Any]) -> None:
        labels = item["metadata"].get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME and SERVICE_NAME_LABEL in labels:
            self.enqueue(f"{item['metadata']['namespace']}/{labels[SERVICE_NAME_LABEL]}")

    def _owned_slices(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [s for s in self.slices.by_index("service", name)
                if s["metadata"]["namespace"] == namespace and
                (s["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == CONTROLLER_NAME]

    def _caught_up(self, key: str) -> bool:
        """Whether the cache shows every write this controller made for the service."""
        entry = self._written.get(key)
        if entry is None:
            return True
        written, since = entry
        namespace, _ = split_key(key)
        for name, version in written.items():
            cached = self.slices.get_by_name(namespace, name)
            if version is None and cached is not None:
                break
            if version is not None and (cached is None or int(
                    cached["metadata"]["resourceVersion"]) < version):
                break
        else:
            del self._written[key]
            return True
        if time.monotonic() - since > TRACKER_TIMEOUT:
            del self._written[key]
            return True
        return False

    def _record(self, key: str, name: str, version: int | None) -> None:
        written, _ = self._written.get(key, ({}, 0.0))
        written[name] = version
        self._written[key] = (written, time.monotonic())

    def _endpoint(self, service: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
        serving = is_pod_ready(pod)
        terminating = bool(pod["metadata"].get("deletionTimestamp"))
        publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
        endpoint: dict[str, Any] = {
            "addresses": [pod["status"]["podIP"]],
            "conditions": {"ready": publish or (serving and not terminating),
                           "serving": serving, "terminating": terminating},
            "targetRef": target_ref(pod),
        }
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            endpoint["nodeName"] = node_name
            node = self.nodes.get(node_name)
            zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(ZONE_LABEL)
            if zone:
                endpoint["zone"] = zone
        hostname = hostname_of(service, pod)
        if hostname:
            endpoint["hostname"] = hostname
        return endpoint

    def wanted(self, service: dict[str, Any]) -> list[tuple[list, list]]:
        """(ports, endpoints) per slice, in a stable order."""
        groups: dict[str, tuple[list, list]] = {}
        has_ports = bool((service.get("spec") or {}).get("ports"))
        for pod in selected_pods(service, self.pods.list(service["metadata"]["namespace"])):
            if not should_be_in_endpoints(pod, True):
                continue
            ports = ports_for(service, pod)
            if has_ports and not ports:
                continue
            groups.setdefault(repr(ports), (ports, []))[1].append(self._endpoint(service, pod))
        slices = []
        for ports, endpoints in sorted(groups.values(), key=lambda g: repr(g[0])):
            endpoints.sort(key=lambda e: (e["targetRef"]["name"], e["addresses"][0]))
            for start in range(0, len(endpoints), MAX_ENDPOINTS):
                slices.append((ports, endpoints[start:start + MAX_ENDPOINTS]))
        return slices or [([], [])]  # the placeholder

    def _body(self, service: dict[str, Any], ports: list, endpoints: list,
              base: dict[str, Any] | None) -> dict[str, Any]:
        name = service["metadata"]["name"]
        labels = {**service_labels(service), SERVICE_NAME_LABEL: name,
                  MANAGED_BY_LABEL: CONTROLLER_NAME}
        owner = owner_reference({"apiVersion": "v1", "kind": "Service",
                                 "metadata": service["metadata"]})
        if base is None:
            metadata = {"generateName": f"{name}-", "namespace": service["metadata"]["namespace"],
                        "labels": labels, "ownerReferences": [owner]}
        else:
            metadata = {**base["metadata"], "labels": labels, "ownerReferences": [owner]}
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": metadata, "addressType": "IPv4", "endpoints": endpoints,
                "ports": ports}

    @staticmethod
    def _same(current: dict[str, Any], body: dict[str, Any]) -> bool:
        return (current.get("endpoints") or []) == body["endpoints"] and \
            (current.get("ports") or []) == body["ports"] and \
            current["metadata"].get("labels") == body["metadata"]["labels"] and \
            current["metadata"].get("ownerReferences") == body["metadata"]["ownerReferences"]

    async def reconcile(self, key: str) -> float | None:
        namespace, name = split_key(key)
        if not self._caught_up(key):
            return 0.05
        service = self.services.get(key)
        existing = self._owned_slices(namespace, name)
        if service is None or not has_selector(service):
            for item in existing:
                await self._delete(key, item)
            return None
        unused = sorted(existing, key=lambda s: s["metadata"]["name"])
        for ports, endpoints in self.wanted(service):
            # reuse a slice with the same ports, else any, else create
            match = next((s for s in unused if (s.get("ports") or []) == ports), None)
            if match is None and unused:
                match = unused[0]
            if match is not None:
                unused.remove(match)
                body = self._body(service, ports, endpoints, match)
                if not self._same(match, body):
                    written = await self.client.update(SLICES, body)
                    self._record(key, written["metadata"]["name"],
                                 int(written["metadata"]["resourceVersion"]))
                continue
            written = await self.client.create(SLICES, self._body(service, ports, endpoints,
                                                                  None), namespace)
            self._record(key, written["metadata"]["name"],
                         int(written["metadata"]["resourceVersion"]))
        for item in unused:
            await self._delete(key, item)
        return None

    async def _delete(self, key: str, item: dict[str, Any]) -> None:
        try:
            await self.client.delete(SLICES, item["metadata"]["name"],
                                     item["metadata"]["namespace"])
        except errors.NotFound:
            pass
        self._record(key, item["metadata"]["name"], None)

