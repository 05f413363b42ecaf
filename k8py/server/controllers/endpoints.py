"""Endpoints (upstream's endpoints controller): for every Service with a selector, an
Endpoints object of the same name listing the pods it selects.

Per service (not ExternalName, with a non-empty `spec.selector`): the pods of its namespace
that match the selector and have a pod IP; a pod being deleted is left out (unless
`publishNotReadyAddresses`), and so is one that has finished for good (restartPolicy Never and
Succeeded/Failed, OnFailure and Succeeded). Ready pods go to `addresses`, the others to
`notReadyAddresses` (all to `addresses` with `publishNotReadyAddresses`), each with its IP,
`nodeName`, a `targetRef` to the pod, and `hostname` when the pod's subdomain is the service.
Ports: each service port's `targetPort`, a number as is or a name looked up among the pod's
container ports (a pod without that named port is left out of that port's subset). Addresses
with the same ports share a subset; everything is sorted so that an unchanged set of pods
writes nothing.

Services without a selector are left alone (their Endpoints are the user's). Like upstream,
Endpoints carry the service's labels but no ownerReference; the controller deletes them when
the service goes. `ports_for` and `selected_pods` are shared with the EndpointSlice
controller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from k8py.api import errors, selectors
from k8py.api.resources import builtin
from k8py.client.informer import key_of, split_key
from k8py.server.controllers.base import Controller, is_pod_ready

SERVICES = builtin("v1", "services")
PODS = builtin("v1", "pods")
ENDPOINTS = builtin("v1", "endpoints")
HEADLESS_LABEL = "service.kubernetes.io/headless"


def has_selector(service: dict[str, Any]) -> bool:
    spec = service.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def should_be_in_endpoints(pod: dict[str, Any], include_terminating: bool) -> bool:
    """Upstream's ShouldPodBeInEndpoints."""
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return False
    if not include_terminating and pod["metadata"].get("deletionTimestamp"):
        return False
    phase = status.get("phase")
    policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
    if policy == "Never":
        return phase not in ("Succeeded", "Failed")
    if policy == "OnFailure":
        return phase != "Succeeded"
    return True


def find_port(pod: dict[str, Any], service_port: dict[str, Any]) -> int | None:
    """The pod's port for a service port (upstream's podutil.FindPort)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol", "TCP")
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return port.get("containerPort")
    return None


def ports_for(service: dict[str, Any], pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The endpoint ports of `pod` for `service`, sorted by name."""
    ports = []
    for service_port in (service.get("spec") or {}).get("ports") or []:
        number = find_port(pod, service_port)
        if number is None:
            continue
        port = {"port": number, "protocol": service_port.get("protocol", "TCP")}
        if service_port.get("name"):
            port["name"] = service_port["name"]
        if service_port.get("appProtocol"):
            port["appProtocol"] = service_port["appProtocol"]
        ports.append(port)
    return sorted(ports, key=lambda p: (p.get("name", ""), p["port"], p["protocol"]))


def selected_pods(service: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    selector = {"matchLabels": (service.get("spec") or {}).get("selector") or {}}
    return [p for p in pods
            if selectors.selector_matches(selector, p["metadata"].get("labels") or {})]


def target_ref(pod: dict[str, Any]) -> dict[str, Any]:
    metadata = pod["metadata"]
    return {"kind": "Pod", "namespace": metadata["namespace"], "name": metadata["name"],
            "uid": metadata["uid"]}


def hostname_of(service: dict[str, Any], pod: dict[str, Any]) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        return spec["hostname"]
    return None


def service_labels(service: dict[str, Any]) -> dict[str, str]:
    labels = dict(service["metadata"].get("labels") or {})
    if (service.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    return labels


class ServicePodsController(Controller):
    """Services and the pods they select: a pod change queues the services selecting the pod
    before and after the change."""

    def setup(self) -> None:
        self.services = self.informer(SERVICES)
        self.services.add_handlers(self.enqueue_object,
                                   lambda old, new: self.enqueue_object(new),
                                   self.enqueue_object)
        self.pods = self.informer(PODS)
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_added)

    def _enqueue_selecting(self, pod: dict[str, Any]) -> None:
        labels = pod["metadata"].get("labels") or {}
        for service in self.services.list(pod["metadata"]["namespace"]):
            selector = (service.get("spec") or {}).get("selector")
            if selector and selectors.selector_matches({"matchLabels": selector}, labels):
                self.enqueue_object(service)

    def _pod_added(self, pod: dict[str, Any]) -> None:
        self._enqueue_selecting(pod)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._enqueue_selecting(new)
        if old["metadata"].get("labels") != new["metadata"].get("labels"):
            self._enqueue_selecting(old)


class EndpointsController(ServicePodsController):
    name = "endpoints"
    service_account = "endpoint-controller"
    workers = 4

    def setup(self) -> None:
        super().setup()
        self.endpoints = self.informer(ENDPOINTS)
        self.endpoints.add_handlers(on_delete=self._endpoints_deleted)

    def _endpoints_deleted(self, endpoints: dict[str, Any]) -> None:
        self.enqueue(key_of(endpoints))  # recreated if its service still selects pods

    def subsets(self, service: dict[str, Any]) -> list[dict[str, Any]]:
        publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
        groups: dict[str, tuple[list, list, list]] = {}
        for pod in selected_pods(service, self.pods.list(service["metadata"]["namespace"])):
            if not should_be_in_endpoints(pod, publish):
                continue
            ports = ports_for(service, pod)
            if not ports and (service.get("spec") or {}).get("ports"):
                continue
            address: dict[str, Any] = {"ip": pod["status"]["podIP"], "targetRef": target_ref(pod)}
            if (pod.get("spec") or {}).get("nodeName"):
                address["nodeName"] = pod["spec"]["nodeName"]
            hostname = hostname_of(service, pod)
            if hostname:
                address["hostname"] = hostname
            group = groups.setdefault(repr(ports), (ports, [], []))
            ready = publish or is_pod_ready(pod)
            (group[1] if ready else group[2]).append(address)
        subsets = []
        for ports, ready, not_ready in sorted(groups.values(), key=lambda g: repr(g[0])):
            subset: dict[str, Any] = {}
            if ready:
                subset["addresses"] = sorted(ready, key=_by_ip)
            if not_ready:
                subset["notReadyAddresses"] = sorted(not_ready, key=_by_ip)
            if ports:
                subset["ports"] = ports
            subsets.append(subset)
        return subsets

    async def reconcile(self, key: str) -> float | None:
        namespace, name = split_key(key)
        service = self.services.get(key)
        current = self.endpoints.get(key)
        if service is None:
            if current is not None:
                await _delete_quietly(self.client.delete, ENDPOINTS, name, namespace)
            return None
        if not has_selector(service):
            return None
        subsets = self.subsets(service)
        labels = service_labels(service)
        if current is None:
            body = {"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels},
                    "subsets": subsets}
            await self.client.create(ENDPOINTS, body, namespace)
            return None
        if (current.get("subsets") or []) == subsets and \
                (current["metadata"].get("labels") or {}) == labels:
            return None
        body = {**current, "metadata": {**current["metadata"], "labels": labels},
                "subsets": subsets}
        await self.client.update(ENDPOINTS, body)
        return None


def _by_ip(address: dict[str, Any]) -> tuple:
    return tuple(int(part) if part.isdigit() else 0 for part in address["ip"].split(".")) \
        + (address["targetRef"]["name"],)


async def _delete_quietly(delete: Callable, resource, name: str, namespace: str | None) -> None:
    try:
        await delete(resource, name, namespace)
    except errors.NotFound:
        pass
