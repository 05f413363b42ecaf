"""The API servers' leases in the store: how several API servers sharing one store know each
other (upstream's `--endpoint-reconciler-type=lease`, `pkg/controlplane/reconcilers`).

Each live API server keeps a key `/registry/masterleases/<address>` written with a TTL of
LEASE_TTL seconds (upstream: 15 s) and renews it on every pass of its endpoint reconciler
(`k8py.server.controllers.advertising`, every 10 s); a server that dies stops renewing and
its key expires (a store delete), one that stops removes its key itself. The value is an
Endpoints naming the address, as upstream's.
"""

from __future__ import annotations

import contextlib
import json

from k8py.server.store.backend import Backend, Conflict, KeyExists, KeyNotFound

LEASE_PREFIX = "/registry/masterleases/"
LEASE_TTL = 15.0


class MasterLeases:
    """The live API servers' addresses: one TTL'd key each under LEASE_PREFIX (upstream's
    `storageLeases`)."""

    def __init__(self, store: Backend, ttl: float = LEASE_TTL):
        self.store, self.ttl = store, ttl

    async def renew(self, address: str) -> None:
        """Write this server's lease with a fresh TTL."""
        key = LEASE_PREFIX + address
        value = json.dumps({"kind": "Endpoints", "apiVersion": "v1",
                            "metadata": {"name": address},
                            "subsets": [{"addresses": [{"ip": address}]}]}).encode()
        current = await self.store.get(key)
        try:
            if current is None:
                await self.store.create(key, value, ttl=self.ttl)
            else:
                await self.store.update(key, value, mod_revision=current.mod_revision,
                                        ttl=self.ttl)
        except (KeyExists, Conflict, KeyNotFound):
            pass  # another writer of the same address raced us: its lease stands for ours

    async def addresses(self) -> list[str]:
        result = await self.store.range(LEASE_PREFIX)
        return sorted(kv.key[len(LEASE_PREFIX):] for kv in result.items)

    async def remove(self, address: str) -> None:
        with contextlib.suppress(KeyNotFound):
            await self.store.delete(LEASE_PREFIX + address)
