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
node IP if given (k3s advertises its --node-ip), else the host's primary IPv4 address (the
source address of its default route; k3s and upstream take the default route's interface
too), or 127.0.0.1 on a host without a default route.

Several API servers share one store (upstream's `--endpoint-reconciler-type=lease`, its
default): each keeps a key `/registry/masterleases/<address>` written with a TTL of
15 s and renewed on every pass (`k8py.server.apiserver.masterleases`), and writes the objects with
the addresses of all unexpired leases, sorted, each server's own always among them. A server
that stops takes its lease and its address out (`withdraw`); one that dies drops out when its
lease expires, on the next pass of a live one. All servers advertise their own port; they
are expected to listen on the same one (as upstream's reconciler does).

`keep` writes both at start and every `interval` seconds after (upstream: every 10 s), so a
deleted or edited object comes back. Each pass reads both and writes only what differs;
errors are logged and retried on the next pass.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any, Protocol

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
WITHDRAW_TIMEOUT = 2.0  # seconds a stopping server spends taking itself out

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


def advertised_address(bind: ipaddress.IPv4Address | ipaddress.IPv6Address,
                       node_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
                       ) -> str:
    if not bind.is_unspecified:
        return str(bind)
    if node_ip is not None and not node_ip.is_unspecified:
        return str(node_ip)
    address = primary_ipv4()
    if address is None or address == "0.0.0.0":
        log.warning("no default route: advertising the API server as 127.0.0.1")
        return "127.0.0.1"
    return address


def _addresses(address: str | list[str]) -> list[str]:
    return [address] if isinstance(address, str) else list(address)


def endpoints_body(address: str | list[str], port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE,
                         "labels": {SKIP_MIRROR_LABEL: "true"}},
            "subsets": [{"addresses": [{"ip": ip} for ip in _addresses(address)],
                         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}


def slice_body(address: str | list[str], port: int) -> dict[str, Any]:
    addresses = _addresses(address)
    family = "IPv6" if ipaddress.ip_address(addresses[0]).version == 6 else "IPv4"
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE,
                         "labels": {SERVICE_NAME_LABEL: SERVICE}},
            "addressType": family,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}
                          for ip in addresses],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


class Leases(Protocol):
    """The live API servers' addresses (`k8py.server.apiserver.masterleases`, on the store:
    this module reaches the API only as a client)."""

    async def renew(self, address: str) -> None: ...

    async def addresses(self) -> list[str]: ...

    async def remove(self, address: str) -> None: ...


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


async def reconcile(client: Client, address: str | list[str], port: int) -> None:
    """One pass: both objects as they should be, with `address` (or all these addresses)."""
    await _ensure(client, ENDPOINTS, endpoints_body(address, port), ("subsets",))
    await _ensure(client, SLICES, slice_body(address, port),
                  ("addressType", "endpoints", "ports"))


async def _live_addresses(leases: Leases | None, address: str) -> list[str]:
    if leases is None:
        return [address]
    await leases.renew(address)
    # our own address even if the range raced the renewal
    return sorted(set(await leases.addresses()) | {address})


async def withdraw(client: Client, leases: Leases, address: str, port: int) -> None:
    """A stopping server: its lease gone, the objects left with the other live servers
    (upstream's `RemoveEndpoints`); with none left they stay as they are."""
    await leases.remove(address)
    others = [ip for ip in await leases.addresses() if ip != address]
    if others:
        await reconcile(client, others, port)
    log.info("took %s out of the kubernetes endpoints", address)


async def keep(client: Client, address: str, port: int, interval: float = INTERVAL, *,
               leases: Leases | None = None) -> None:
    """Reconcile now and every `interval` seconds, until cancelled; with `leases`, with
    every live API server's address, and this one's taken out when cancelled."""
    try:
        while True:
            try:
                await reconcile(client, await _live_addresses(leases, address), port)
            except errors.StatusError as exc:
                log.warning("could not write the kubernetes endpoints: %s", exc)
            except Exception:  # a bug here must not stop the API server: log, try later
                log.exception("could not write the kubernetes endpoints")
            await asyncio.sleep(interval)
    except asyncio.CancelledError:
        if leases is not None:
            try:
                async with asyncio.timeout(WITHDRAW_TIMEOUT):
                    await withdraw(client, leases, address, port)
            except Exception as exc:  # stopping anyway: the lease expires by itself
                log.warning("could not take %s out of the kubernetes endpoints: %r",
                            address, exc)
        raise
