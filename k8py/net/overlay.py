"""Pods reaching pods on other nodes: routes to every other node's podCIDR, as flannel makes
them (k3s's default), kept with pyroute2 from the Node objects.

Each agent publishes, on its own Node, flannel's annotations (`flannel.alpha.coreos.com/
public-ip`, `backend-type`, `backend-data`, `kube-subnet-manager`), and reads everyone
else's. The routes, per backend:
- **vxlan** (the default): a device `flannel.1` (VNI 1, UDP 8472, on the uplink, MTU of the
  uplink minus 50, no learning) holding this node's podCIDR network address as a /32; per
  remote node, a permanent neighbour (its network address → its VTEP MAC), a permanent FDB
  entry (its VTEP MAC → its public IP) and the route `podCIDR via <network address> dev
  flannel.1 onlink`;
- **host-gw**: the route `podCIDR via <public IP>`, which needs every node on one L2 segment
  (refused with a clear message otherwise).
What a node that left had is removed. Traffic between pods keeps its addresses; pod traffic
leaving the cluster CIDR is masqueraded by the proxy's table (`servicerules`).

`plan(self, nodes)` is pure (what routes, neighbours and FDB entries should exist); `Overlay`
applies the difference with pyroute2 in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

ANNOTATION = "flannel.alpha.coreos.com/"
PUBLIC_IP = ANNOTATION + "public-ip"
BACKEND_TYPE = ANNOTATION + "backend-type"
BACKEND_DATA = ANNOTATION + "backend-data"
SUBNET_MANAGER = ANNOTATION + "kube-subnet-manager"
VXLAN_DEVICE = "flannel.1"
# the `proto` of the routes added here, so `k8py killall` finds them (an unassigned value;
# k8py.hostcleanup.ROUTE_PROTOCOL)
ROUTE_PROTOCOL = 163
VXLAN_ID = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50
BACKENDS = ("vxlan", "host-gw")


class OverlayError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Peer:
    """Another node, as its Node object says: where its pods live and how to reach them."""
    name: str
    pod_cidr: str
    public_ip: str
    vtep_mac: str = ""

    @property
    def network_address(self) -> str:
        return str(ipaddress.ip_network(self.pod_cidr).network_address)


def annotations(backend: str, public_ip: str, vtep_mac: str = "") -> dict[str, str]:
    """What this node publishes on its Node object."""
    data = json.dumps({"VNI": VXLAN_ID, "VtepMAC": vtep_mac}) if backend == "vxlan" \
        else "null"
    return {PUBLIC_IP: public_ip, BACKEND_TYPE: backend, BACKEND_DATA: data,
            SUBNET_MANAGER: "true"}


def peers(nodes: Iterable[Mapping[str, Any]], own_name: str, backend: str) -> list[Peer]:
    """The other nodes that published what `backend` needs to reach their pods."""
    found = []
    for node in nodes:
        metadata, spec = node.get("metadata") or {}, node.get("spec") or {}
        notes = metadata.get("annotations") or {}
        cidr = spec.get("podCIDR") or next(iter(spec.get("podCIDRs") or ()), "")
        if metadata.get("name") == own_name or not cidr or not notes.get(PUBLIC_IP):
            continue
        if ":" in cidr or notes.get(BACKEND_TYPE, backend) != backend:
            continue
        mac = ""
        if backend == "vxlan":
            try:
                mac = (json.loads(notes.get(BACKEND_DATA) or "null") or {}).get("VtepMAC", "")
            except (ValueError, AttributeError):
                mac = ""
            if not mac:
                continue
        found.append(Peer(metadata["name"], cidr, notes[PUBLIC_IP], mac))
    return sorted(found, key=lambda p: p.name)


def check_host_gw(own_ip: str, prefix: int, remote: Iterable[Peer]) -> None:
    """host-gw routes through the peers' addresses: they must be on our segment."""
    segment = ipaddress.ip_network(f"{own_ip}/{prefix}", strict=False)
    for peer in remote:
        if ipaddress.ip_address(peer.public_ip) not in segment:
            raise OverlayError(
                f"flannel backend host-gw needs every node on one L2 network: node "
                f"{peer.name} ({peer.public_ip}) is not in {segment}; use --flannel-backend "
                "vxlan")


class Overlay:
    """This node's end of the pod network across nodes."""

    def __init__(self, backend: str, node_ip: str, iface: str | None = None):
        if backend not in BACKENDS:
            raise OverlayError(f"unknown flannel backend {backend!r}: use one of "
                               f"{', '.join(BACKENDS)}")
        self.backend = backend
        self.node_ip = node_ip
        self.iface = iface
        self.vtep_mac = ""
        self.uplink_mtu = 1500
        self.uplink_prefix = 24
        self._routes: dict[str, Peer] = {}  # pod CIDR -> the peer it was routed for

    # --- setting up ---------------------------------------------------------------------

    def prepare(self, pod_cidr: str) -> None:
        """Find the uplink; for vxlan, make `flannel.1` (blocking: run in a thread)."""
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            uplink = self._uplink(ipr)
            self.uplink_mtu = uplink["mtu"]
            if self.backend != "vxlan":
                return
            existing = ipr.link_lookup(ifname=VXLAN_DEVICE)
            if not existing:
                ipr.link("add", ifname=VXLAN_DEVICE, kind="vxlan", vxlan_id=VXLAN_ID,
                         vxlan_port=VXLAN_PORT, vxlan_local=self.node_ip,
                         vxlan_link=uplink["index"], vxlan_learning=0,
                         mtu=self.uplink_mtu - VXLAN_OVERHEAD)
                existing = ipr.link_lookup(ifname=VXLAN_DEVICE)
            index = existing[0]
            address = str(ipaddress.ip_network(pod_cidr).network_address)
            try:
                ipr.addr("add", index=index, address=address, prefixlen=32)
            except Exception as exc:  # already there
                if "File exists" not in str(exc):
                    raise
            ipr.link("set", index=index, state="up")
            link = ipr.get_links(index)[0]
            self.vtep_mac = link.get_attr("IFLA_ADDRESS")

    def _uplink(self, ipr) -> dict[str, Any]:
        for address in ipr.get_addr(family=2):
            if address.get_attr("IFA_ADDRESS") == self.node_ip:
                link = ipr.get_links(address["index"])[0]
                name = link.get_attr("IFLA_IFNAME")
                if self.iface and name != self.iface:
                    continue
                self.uplink_prefix = address["prefixlen"]
                return {"index": address["index"], "mtu": link.get_attr("IFLA_MTU"),
                        "name": name}
        raise OverlayError(f"no interface holds the node address {self.node_ip}"
                           + (f" on {self.iface}" if self.iface else ""))

    @property
    def pod_mtu(self) -> int:
        return self.uplink_mtu - VXLAN_OVERHEAD if self.backend == "vxlan" \
            else self.uplink_mtu

    # --- keeping the routes ---------------------------------------------------------------

    def sync(self, remote: list[Peer]) -> None:
        """Routes (and for vxlan neighbours and FDB entries) for exactly `remote`; blocking."""
        from pyroute2 import IPRoute

        if self.backend == "host-gw":
            check_host_gw(self.node_ip, self.uplink_prefix, remote)
        wanted = {peer.pod_cidr: peer for peer in remote}
        with IPRoute() as ipr:
            device = ipr.link_lookup(ifname=VXLAN_DEVICE) if self.backend == "vxlan" else []
            for cidr, peer in list(self._routes.items()):
                if wanted.get(cidr) != peer:
                    self._remove(ipr, peer, device)
                    del self._routes[cidr]
            for cidr, peer in wanted.items():
                if self._routes.get(cidr) == peer:
                    continue
                self._add(ipr, peer, device)
                self._routes[cidr] = peer
                log.info("pod network: %s (node %s) via %s", cidr, peer.name,
                         self.backend)

    def _add(self, ipr, peer: Peer, device: list[int]) -> None:
        if self.backend == "host-gw":
            ipr.route("replace", dst=peer.pod_cidr, gateway=peer.public_ip,
                      proto=ROUTE_PROTOCOL)
            return
        index = device[0]
        ipr.neigh("replace", dst=peer.network_address, lladdr=peer.vtep_mac, ifindex=index,
                  state=0x80)  # NUD_PERMANENT
        try:  # `replace` is not supported for VXLAN FDB entries: append, once
            ipr.fdb("append", ifindex=index, lladdr=peer.vtep_mac, dst=peer.public_ip)
        except Exception as exc:
            if "exists" not in str(exc).lower():
                raise
        ipr.route("replace", dst=peer.pod_cidr, gateway=peer.network_address, oif=index,
                  flags=4, proto=ROUTE_PROTOCOL)  # RTNH_F_ONLINK

    def _remove(self, ipr, peer: Peer, device: list[int]) -> None:
        for action in (
                lambda: ipr.route("del", dst=peer.pod_cidr),
                lambda: device and ipr.neigh("del", dst=peer.network_address,
                                             lladdr=peer.vtep_mac, ifindex=device[0]),
                lambda: device and ipr.fdb("del", ifindex=device[0], lladdr=peer.vtep_mac,
                                           dst=peer.public_ip)):
            try:
                action()
            except Exception as exc:  # gone already
                log.debug("pod network: removing %s: %s", peer.pod_cidr, exc)
        log.info("pod network: %s (node %s) removed", peer.pod_cidr, peer.name)


async def keep(overlay: Overlay, nodes_informer, own_name: str) -> None:
    """Follow the Node objects forever: routes to every peer's podCIDR (`nodes_informer`
    is run by the caller)."""
    await nodes_informer.synced.wait()
    changed = asyncio.Event()
    nodes_informer.add_handlers(lambda *_: changed.set(), lambda *_: changed.set(),
                                lambda *_: changed.set())
    while True:
        changed.clear()
        remote = peers(nodes_informer.list(), own_name, overlay.backend)
        try:
            await asyncio.to_thread(overlay.sync, remote)
        except OverlayError as exc:
            log.error("pod network: %s", exc)
        except Exception as exc:  # netlink refused something: try again shortly
            log.warning("pod network: %s", exc)
            await asyncio.sleep(2.0)
            continue
        try:
            async with asyncio.timeout(30.0):
                await changed.wait()
        except asyncio.TimeoutError:
            pass
