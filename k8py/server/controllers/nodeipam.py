"""Node IPAM (upstream's node IPAM controller, range allocator): every node gets a pod CIDR of
its own, `spec.podCIDR` and `spec.podCIDRs`, carved from `settings.cluster_cidr` in blocks of
`settings.node_cidr_mask` (10.42.0.0/16 into /24s: 256 nodes).

The allocation map (block index → node) is rebuilt from the nodes' specs before the first
reconcile, so a restart never hands out a block that is in use; a node keeps the CIDR it has
(even one outside the cluster CIDR, which is simply not tracked). A deleted node's block is
free again. Blocks are handed out lowest first; a reservation is made before the write is
awaited, and undone if the write fails, so two workers never give out the same block. A full
range leaves the node without a CIDR and is retried later, as upstream (which also records a
CIDRNotAvailable event).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.server.controllers.base import Controller

log = logging.getLogger(__name__)

NODES = builtin("v1", "nodes")
FULL_RETRY = 30.0


class NodeIpamController(Controller):
    name = "nodeipam"
    service_account = "node-controller"
    workers = 2

    def setup(self) -> None:
        self.cluster = ipaddress.IPv4Network(self.settings.cluster_cidr)
        self.mask = self.settings.node_cidr_mask
        self.size = 1 << (self.mask - self.cluster.prefixlen)
        self.owner: dict[int, str] = {}  # block index → node name
        self.nodes = self.informer(NODES)
        self.nodes.add_handlers(self._node_changed, lambda old, new: self._node_changed(new),
                                self._node_deleted)

    def _block(self, cidr: str | None) -> int | None:
        try:
            network = ipaddress.IPv4Network(cidr or "")
        except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError):
            return None
        if network.prefixlen != self.mask or not network.subnet_of(self.cluster):
            return None
        return (int(network.network_address) - int(self.cluster.network_address)) >> (
            32 - self.mask)

    def _cidr(self, block: int) -> str:
        base = int(self.cluster.network_address) + (block << (32 - self.mask))
        return f"{ipaddress.IPv4Address(base)}/{self.mask}"

    def _node_changed(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        cidr = (node.get("spec") or {}).get("podCIDR")
        if cidr:
            block = self._block(cidr)
            if block is not None:
                # the map is rebuilt from what nodes hold; the stored node wins over a
                # reservation this controller may have made
                self.owner[block] = name
        else:
            self.enqueue(name)

    def _node_deleted(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        block = self._block((node.get("spec") or {}).get("podCIDR"))
        if block is not None and self.owner.get(block) == name:
            del self.owner[block]
        for key in [b for b, owner in self.owner.items() if owner == name]:
            del self.owner[key]  # a reservation whose write never landed

    def _reserve(self, name: str) -> int | None:
        for block, owner in self.owner.items():
            if owner == name:
                return block
        for block in range(self.size):
            if block not in self.owner:
                self.owner[block] = name
                return block
        return None

    async def reconcile(self, name: str) -> float | None:
        node = self.nodes.get(name)
        if node is None or (node.get("spec") or {}).get("podCIDR"):
            return None
        block = self._reserve(name)
        if block is None:
            log.warning("nodeipam: no pod CIDR left in %s for node %s", self.cluster, name)
            return FULL_RETRY
        cidr = self._cidr(block)
        try:
            # pinned to the version read: a CIDR set meanwhile by someone else is a Conflict
            await self.client.patch(NODES, name, {
                "metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
        except errors.NotFound:
            self.owner.pop(block, None)
        except BaseException:
            self.owner.pop(block, None)
            raise
        return None
