"""Service ClusterIPs and NodePorts, allocated by the API server as a service is written
(upstream's service REST storage and its `ipallocator`/`portallocator`).

On create, a service that needs a ClusterIP (any type but ExternalName, and not headless
`clusterIP: None`) gets a free address of the service CIDR (`--service-cidr`), or the one it
asks for; a NodePort or LoadBalancer service gets a NodePort of `--service-node-port-range`
(default 30000-32767) for every port without one (and a LoadBalancer with
`externalTrafficPolicy: Local` a `healthCheckNodePort`). The IP
family fields are filled as on a single-stack IPv4 cluster: `clusterIPs`, `ipFamilies:
[IPv4]`, `ipFamilyPolicy: SingleStack`. A requested address or port that is taken or out of
range is a 422 with upstream's message.

On update, allocated values a client left out are carried over (upstream's
patchAllocatedValues), values a type change no longer needs are dropped when the client did
not change them (dropTypeDependentFields), new needs are allocated, and what the old version
held and the new one does not is released once the write succeeded. Deleting a service
releases everything it held.

A dry run (`dryRun=All`) allocates like a real write, so the answer shows the address and
ports the service would get and a taken or out-of-range request fails the same way, but
nothing stays reserved (upstream allocates from a dry-run allocator).

State: which addresses and ports are taken lives in the store, one bitmap per range
(`serviceranges`), changed by compare-and-swap, so several API servers sharing one store never
hand out the same value. It is repaired from the stored services before first use and every
`REPAIR_INTERVAL` after (`keep_repaired`), as upstream's repair loops. A reservation is made
before the service is written and undone if the write fails. Dynamic allocation prefers the
upper part of each range, leaving the lower part to explicit requests (upstream's
static/dynamic split: 10.43.0.1 for `kubernetes`, .10 for DNS).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from k8py.api import errors
from k8py.api.resources import Resource, builtin
from k8py.server.apiserver.serviceranges import NODE_PORTS_KEY, SERVICE_IPS_KEY, StoredRange
from k8py.server.apiserver.storage import ObjectStore

log = logging.getLogger(__name__)
SERVICES = builtin("v1", "services")
REPAIR_INTERVAL = 180.0  # seconds, upstream's repair period

SERVICE_CIDR = "10.43.0.0/16"
NODE_PORT_RANGE = (30000, 32767)

Write = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def handles(resource: Resource) -> bool:
    return resource.group == "" and resource.plural == "services"


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _type(spec: dict[str, Any]) -> str:
    return spec.get("type") or "ClusterIP"


def needs_cluster_ip(spec: dict[str, Any]) -> bool:
    return _type(spec) != "ExternalName" and _cluster_ip(spec) != "None"


def needs_node_ports(spec: dict[str, Any]) -> bool:
    kind = _type(spec)
    return kind == "NodePort" or (kind == "LoadBalancer" and
                                  spec.get("allocateLoadBalancerNodePorts", True) is not False)


def needs_health_check_port(spec: dict[str, Any]) -> bool:
    return _type(spec) == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _cluster_ip(spec: dict[str, Any]) -> str:
    ips = spec.get("clusterIPs") or []
    return spec.get("clusterIP") or (ips[0] if ips and isinstance(ips[0], str) else "")


def _ports(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in spec.get("ports") or [] if isinstance(p, dict)]


def _node_ports(spec: dict[str, Any]) -> set[int]:
    used = {p["nodePort"] for p in _ports(spec) if isinstance(p.get("nodePort"), int)}
    if isinstance(spec.get("healthCheckNodePort"), int) and spec["healthCheckNodePort"]:
        used.add(spec["healthCheckNodePort"])
    used.discard(0)
    return used


def _claims(spec: dict[str, Any]) -> tuple[set[int], set[int]]:
    """(addresses as ints, node ports) a stored service holds."""
    ips: set[int] = set()
    if needs_cluster_ip(spec):
        for text in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])]:
            try:
                ips.add(int(ipaddress.IPv4Address(text)))
            except (ipaddress.AddressValueError, ValueError, TypeError):
                pass
    return ips, _node_ports(spec)


def _static_size(size: int, divisor: int, cap: int) -> int:
    return min(max(16, size // divisor), cap)


class ServiceIPs:
    def __init__(self, objects: ObjectStore,
                 service_cidr: str | ipaddress.IPv4Network = SERVICE_CIDR,
                 node_ports: tuple[int, int] = NODE_PORT_RANGE):
        self.objects = objects
        self.network = ipaddress.IPv4Network(service_cidr)
        first = int(self.network.network_address) + 1
        last = int(self.network.broadcast_address) - 1
        self.ips = StoredRange(objects.backend, SERVICE_IPS_KEY, str(self.network), first,
                               last, _static_size(last - first + 1, 16, 256))
        low, high = node_ports
        self.port_range = f"{low}-{high}"
        self.ports = StoredRange(objects.backend, NODE_PORTS_KEY, self.port_range, low, high,
                                 _static_size(high - low + 1, 32, 128))
        self._loaded = False
        self._lock = asyncio.Lock()

    async def repair(self, resource: Resource = SERVICES) -> None:
        """Both ranges rebuilt from the stored services (`StoredRange.repair`)."""
        items, _, _ = await self.objects.list(resource, None)
        ips: set[int] = set()
        ports: set[int] = set()
        for item in items:
            held_ips, held_ports = _claims(_spec(item))
            ips |= held_ips
            ports |= held_ports
        await self.ips.repair(ips)
        await self.ports.repair(ports)

    async def _load(self, resource: Resource) -> None:
        if self._loaded:
            return
        async with self._lock:
            if not self._loaded:
                await self.repair(resource)
                self._loaded = True

    async def keep_repaired(self, interval: float = REPAIR_INTERVAL) -> None:
        """Repair now (unless a write did first) and every `interval`, until cancelled; a
        failed repair is retried at the next one."""
        repair = self._load(SERVICES)
        while True:
            try:
                await repair
            except Exception:  # the store may be away for a while: the next round retries
                log.exception("repairing the service IP and node port ranges failed")
            await asyncio.sleep(interval)
            repair = self.repair()

    # --- the three writes ---------------------------------------------------------------------

    async def create(self, resource: Resource, obj: dict[str, Any], write: Write,
                     dry_run: bool = False) -> dict[str, Any]:
        """Allocate for `obj` (a prepared, validated new service, changed in place), then
        `write` it; the reservation is undone if the write fails. A dry run returns `obj`
        with its allocations, reserving nothing and writing nothing."""
        if not handles(resource):
            return obj if dry_run else await write(obj)
        await self._load(resource)
        try:
            taken = await self._allocate(obj, set(), set(), dry_run)
        except errors.Invalid as invalid:
            # a service that exists holds what it asks for: the answer is that it exists
            metadata = obj["metadata"]
            try:
                await self.objects.get(resource, metadata.get("namespace"), metadata["name"])
            except errors.NotFound:
                raise invalid from None
            raise errors.already_exists(resource.plural, metadata["name"]) from None
        if dry_run:
            return obj
        try:
            return await write(obj)
        except BaseException:
            await self._release(*taken)
            raise

    def carry_over(self, resource: Resource, body: dict[str, Any],
                   current: dict[str, Any]) -> dict[str, Any]:
        """Before an update is prepared: allocated values the client left out come from the
        current version; values the new type does not need go if the client left them as
        they were. Returns a changed copy of `body`."""
        if not handles(resource) or not isinstance(body.get("spec"), dict):
            return body
        old, spec = _spec(current), dict(body["spec"])
        if needs_cluster_ip(old) and needs_cluster_ip(spec):
            if not spec.get("clusterIP") and old.get("clusterIP"):
                spec["clusterIP"] = old["clusterIP"]
            if not spec.get("clusterIPs") and old.get("clusterIPs"):
                spec["clusterIPs"] = old["clusterIPs"]
        elif needs_cluster_ip(old) and _type(spec) == "ExternalName":
            for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if spec.get(field) == old.get(field):
                    spec.pop(field, None)
        if needs_node_ports(old) and needs_node_ports(spec):
            by_name = {p.get("name", ""): p.get("nodePort") for p in _ports(old)}
            used = {p.get("nodePort") for p in _ports(spec)}
            ports = []
            for port in spec.get("ports") or []:
                if isinstance(port, dict) and not port.get("nodePort"):
                    value = by_name.get(port.get("name", ""))
                    if value and value not in used:
                        port = {**port, "nodePort": value}
                ports.append(port)
            spec["ports"] = ports
        elif needs_node_ports(old) and not needs_node_ports(spec):
            if sorted(p.get("nodePort", 0) for p in _ports(spec)) == \
                    sorted(p.get("nodePort", 0) for p in _ports(old)):
                spec["ports"] = [{k: v for k, v in p.items() if k != "nodePort"}
                                 if isinstance(p, dict) else p
                                 for p in spec.get("ports") or []]
        if needs_health_check_port(old) and needs_health_check_port(spec):
            if not spec.get("healthCheckNodePort") and old.get("healthCheckNodePort"):
                spec["healthCheckNodePort"] = old["healthCheckNodePort"]
        elif needs_health_check_port(old) and \
                spec.get("healthCheckNodePort") == old.get("healthCheckNodePort"):
            spec.pop("healthCheckNodePort", None)
        return {**body, "spec": spec}

    async def update(self, resource: Resource, new: dict[str, Any], current: dict[str, Any],
                     write: Write, dry_run: bool = False) -> dict[str, Any]:
        """Allocate what `new` needs beyond what `current` holds, write, then release what
        only `current` held (or, if the write failed, what was reserved for it). A dry run
        returns `new` with its allocations and changes nothing."""
        if not handles(resource):
            return new if dry_run else await write(new)
        await self._load(resource)
        held_ips, held_ports = _claims(_spec(current))
        taken = await self._allocate(new, held_ips, held_ports, dry_run)
        if dry_run:
            return new
        try:
            written = await write(new)
        except BaseException:
            await self._release(*taken)
            raise
        kept_ips, kept_ports = _claims(_spec(written))
        await self._release(held_ips - kept_ips, held_ports - kept_ports)
        return written

    async def deleted(self, resource: Resource, obj: dict[str, Any]) -> None:
        """After a service is removed from the store: release what it held."""
        if not handles(resource):
            return
        await self._load(resource)
        await self._release(*_claims(_spec(obj)))

    # --- allocating ---------------------------------------------------------------------------

    async def _release(self, ips: set[int], ports: set[int]) -> None:
        await self.ips.release(ips)
        await self.ports.release(ports)

    async def _allocate(self, obj: dict[str, Any], held_ips: set[int], held_ports: set[int],
                        dry_run: bool) -> tuple[set[int], set[int]]:
        """Fill in and reserve `obj`'s addresses and ports; (newly reserved ips, ports).
        Nothing stays reserved if this raises; a dry run fills in and reserves nothing."""
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return set(), set()
        name = obj["metadata"]["name"]
        new_ips: set[int] = set()
        new_ports: set[int] = set()
        try:
            self._family_fields(spec)
            if needs_cluster_ip(spec):
                ip = await self._cluster_ip(spec, name, held_ips, dry_run)
                if ip not in held_ips:
                    new_ips.add(ip)
            if needs_node_ports(spec):
                for i, port in enumerate(spec.get("ports") or []):
                    if isinstance(port, dict):
                        value = await self._node_port(port.get("nodePort"), name,
                                                      f"spec.ports[{i}].nodePort",
                                                      held_ports | new_ports, new_ports, dry_run)
                        port["nodePort"] = value
            if needs_health_check_port(spec):
                spec["healthCheckNodePort"] = await self._node_port(
                    spec.get("healthCheckNodePort"), name, "spec.healthCheckNodePort",
                    held_ports | new_ports, new_ports, dry_run)
        except BaseException:
            if not dry_run:
                await self._release(new_ips, new_ports)
            raise
        return (set(), set()) if dry_run else (new_ips, new_ports)

    @staticmethod
    def _family_fields(spec: dict[str, Any]) -> None:
        if _type(spec) == "ExternalName":
            return
        if _cluster_ip(spec) == "None":
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
            if spec.get("selector"):
                spec.setdefault("ipFamilyPolicy", "SingleStack")
                spec.setdefault("ipFamilies", ["IPv4"])
            else:  # headless without selector: upstream defaults to dual families
                spec.setdefault("ipFamilyPolicy", "RequireDualStack")
                spec.setdefault("ipFamilies", ["IPv4", "IPv6"]
                                if spec["ipFamilyPolicy"] != "SingleStack" else ["IPv4"])
            return
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("ipFamilies", ["IPv4"])

    def _invalid(self, name: str, field: str, message: str) -> errors.Invalid:
        return errors.invalid("Service", name, [(field, "FieldValueInvalid", message)])

    async def _cluster_ip(self, spec: dict[str, Any], name: str, held: set[int],
                          dry_run: bool) -> int:
        requested = _cluster_ip(spec)
        if not requested:
            value = await self.ips.take_next(dry_run)
            if value is None:
                raise errors.InternalError(
                    "Internal error occurred: failed to allocate a serviceIP: range is full")
        else:
            quoted = f'[]string{{"{requested}"}}'
            try:
                value = int(ipaddress.IPv4Address(requested))
            except (ipaddress.AddressValueError, ValueError):
                raise self._invalid(name, "spec.clusterIPs[0]",
                                    f'Invalid value: "{requested}": must be a valid IP '
                                    "address, (e.g. 10.9.8.7 or 2001:db8::ffff)") from None
            if value not in self.ips and value not in held:
                raise self._invalid(
                    name, "spec.clusterIPs",
                    f"Invalid value: {quoted}: failed to allocate IP {requested}: the provided "
                    f"IP ({requested}) is not in the valid range. The range of valid IPs is "
                    f"{self.network}")
            if value not in held and not await self.ips.take(value, dry_run):
                raise self._invalid(
                    name, "spec.clusterIPs",
                    f"Invalid value: {quoted}: failed to allocate IP {requested}: provided IP "
                    "is already allocated")
        text = str(ipaddress.IPv4Address(value))
        spec["clusterIP"] = text
        spec["clusterIPs"] = [text]
        return value

    async def _node_port(self, requested: Any, name: str, field: str,
                         held: set[int], new: set[int], dry_run: bool) -> int:
        """A node port for one port of the service; `held` are the service's own already
        (a port may share its number with another of the same service, as upstream allows
        for different protocols)."""
        if not requested:
            value = await self.ports.take_next(dry_run, exclude=held)
            if value is None:
                raise errors.InternalError(
                    "Internal error occurred: failed to allocate a nodePort: range is full")
            new.add(value)
            return value
        if not isinstance(requested, int) or isinstance(requested, bool):
            raise self._invalid(name, field, f"Invalid value: {requested!r}: must be an "
                                "integer")
        if requested in held:
            return requested
        if requested not in self.ports:
            raise self._invalid(name, field,
                                f"Invalid value: {requested}: provided port is not in the "
                                f"valid range. The range of valid ports is {self.port_range}")
        if not await self.ports.take(requested, dry_run):
            raise self._invalid(name, field, f"Invalid value: {requested}: provided port is "
                                "already allocated")
        new.add(requested)
        return requested
