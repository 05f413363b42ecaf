"""The API server advertises itself: the Endpoints and EndpointSlice of the `kubernetes`
Service in `default` (upstream's endpoint reconciler, `pkg/controlplane/reconcilers`).

That Service has no selector, so no controller fills them in (the endpoints and
endpointslice controllers leave selector-less services alone); the API server writes them
itself, as upstream's `EndpointsAdapter` does:
- Endpoints `default/kubernetes`, labelled `endpointslice.kubernetes.io/skip-mirror: "true"`,
  one subset: the advertised address, port `https` = the API server's port, TCP;
- EndpointSlice `default/kubernetes`, labelled only `kubernetes.io/service-name:
  kubernetes` (no managed-by label: no controller owns it), the same address as one ready
  endpoint and the same port.

The advertised address is the bind address, or for an unspecified one (`0.0.0.0`) the
host's primary IPv4 address (the source address of its default route; k3s and upstream take
the default route's interface too), or 127.0.0.1 on a host without a default route.

`keep` writes both at start and every `interval` seconds after (upstream: every 10 s), so a
deleted or edited object comes back. Each pass reads both and writes only what differs;
errors are logged and retried on the next pass. With one API server per store the objects
hold exactly its address (upstream's lease reconciler merges the addresses of all live API
servers: not built, nor is taking the address out at shutdown).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client

ENDPOINTS = builtin("v1", "endpoints")
SLICES = builtin("discovery.k8s.io/v1", "endpointslices")
SERVICE = "kubernetes"
NAMESPACE = "default"
FIELD_MANAGER = "kube-apiserver"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
INTERVAL = 10.0

log = logging.getLogger(__name__)


def primary_ipv4() -> str | None:
    """The address this host sends from on its default route, if it has one. A UDP
    `connect` only picks a route: no packet leaves."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: any off-host address will do
            return probe.getsockname()[0]
        except OSError:
            return None


def advertised_address(bind: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if not bind.is_unspecified:
        return str(bind)
    address = primary_ipv4()
    if address is None or address == "0.0.0.0":
        log.warning("no default route: advertising the API server as 127.0.0.1")
        return "127.0.0.1"
    return address


def endpoints_body(address: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE,
                         "labels": {SKIP_MIRROR_LABEL: "true"}},
            "subsets": [{"addresses": [{"ip": address}],
                         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}


def slice_body(address: str, port: int) -> dict[str, Any]:
    family = "IPv6" if ipaddress.ip_address(address).version == 6 else "IPv4"
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE,
                         "labels": {SERVICE_NAME_LABEL: SERVICE}},
            "addressType": family,
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


async def _ensure(client: Client, resource, wanted: dict[str, Any],
                  fields: tuple[str, ...]) -> None:
    """Create `wanted`, or update the stored object if its labels or `fields` differ."""
    try:
        current = await client.get(resource, SERVICE, NAMESPACE)
    except errors.NotFound:
        try:
            await client.create(resource, wanted, NAMESPACE)
        except errors.AlreadyExists:
            pass  # created meanwhile: the next pass compares it
        return
    if (current["metadata"].get("labels") or {}) == wanted["metadata"]["labels"] and \
            all(current.get(field) == wanted[field] for field in fields):
        return
    log.info("resetting %s %s/%s to %s", resource.plural, NAMESPACE, SERVICE,
             {field: wanted[field] for field in fields})
    body = {**current, **{field: wanted[field] for field in fields},
            "metadata": {**current["metadata"], "labels": wanted["metadata"]["labels"]}}
    await client.update(resource, body)


async def reconcile(client: Client, address: str, port: int) -> None:
    """One pass: both objects as they should be."""
    await _ensure(client, ENDPOINTS, endpoints_body(address, port), ("subsets",))
    await _ensure(client, SLICES, slice_body(address, port),
                  ("addressType", "endpoints", "ports"))


async def keep(client: Client, address: str, port: int, interval: float = INTERVAL) -> None:
    """Reconcile now and every `interval` seconds, until cancelled."""
    while True:
        try:
            await reconcile(client, address, port)
        except errors.StatusError as exc:
            log.warning("could not write the kubernetes endpoints: %s", exc)
        except Exception:  # a bug here must not stop the API server: log, try again later
            log.exception("could not write the kubernetes endpoints")
        await asyncio.sleep(interval)
