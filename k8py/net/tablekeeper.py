"""The loop that keeps one nftables table equal to a pure function of informer caches: what
the Service proxy and the NetworkPolicy enforcer share.

Any change in the informers marks the table stale; after a short debounce (so a rollout's
burst of writes is one apply) `build()` computes the wanted `nftscript.Table` and what
changed since the last apply goes to the kernel as one transaction (`nftscript.delta`). The
first apply, one every `RESYNC` seconds (repairing anything changed behind our back) and one
after any failed apply write the table whole (`nftscript.full`); the kernel's table is never
listed. Applies run in a worker thread (libnftables blocks) in the agent's network
namespace; a failed one is logged and retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from k8py.client.informer import Informer
from k8py.net import nftscript
from k8py.net.nft import Nft, NftError

log = logging.getLogger(__name__)

DEBOUNCE = 0.05
RESYNC = 60.0


class TableKeeper:
    what = "rules"  # for the log

    def __init__(self, informers: Sequence[Informer], shared: bool, nft: Nft | None = None):
        self.informers = list(informers)
        self.shared = shared  # the informers are run by the caller (others use them too)
        self.nft = nft or Nft()
        self.stale = asyncio.Event()
        self.applied: nftscript.Table | None = None
        self.applies = 0  # how many scripts went to the kernel

    def build(self) -> nftscript.Table:
        raise NotImplementedError

    async def after_apply(self) -> None:
        """What follows an apply that reached the kernel (nothing by default)."""

    def matters(self, old: dict, new: dict) -> bool:
        """Whether an update can change the table (every one, unless a keeper knows
        better)."""
        return True

    def _changed(self, *_objects) -> None:
        self.stale.set()

    def _updated(self, old: dict, new: dict) -> None:
        if self.matters(old, new):
            self.stale.set()

    async def sync(self, force: bool = False) -> bool:
        """Apply what changed (everything with `force`); whether anything was applied."""
        rules = self.build()
        script = None
        if self.applied is not None and not force:
            script = nftscript.delta(self.applied, rules)
            if script == "":
                return False
        if script is None:
            script = nftscript.full(rules)
        self.applied = None  # unknown until the kernel took it
        await asyncio.to_thread(self.nft.run, script)
        self.applied = rules
        self.applies += 1
        await self.after_apply()
        return True

    async def run(self, ready: asyncio.Event | None = None) -> None:
        for informer in self.informers:
            informer.add_handlers(self._changed, self._updated, self._changed)
        tasks = [] if self.shared else [asyncio.create_task(i.run()) for i in self.informers]
        try:
            for informer in self.informers:
                await informer.synced.wait()
            await self._loop(ready)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, ready: asyncio.Event | None) -> None:
        last_full = 0.0
        delay = 1.0
        while True:
            force = time.monotonic() - last_full >= RESYNC
            self.stale.clear()
            try:
                started = time.monotonic()
                if await self.sync(force=force):
                    log.debug("%s applied in %.0f ms", self.what,
                              (time.monotonic() - started) * 1000)
                if force:
                    last_full = time.monotonic()
                delay = 1.0
                if ready is not None:
                    ready.set()
            except NftError as exc:
                log.error("applying the %s failed: %s", self.what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            try:
                async with asyncio.timeout(RESYNC):
                    await self.stale.wait()
                await asyncio.sleep(DEBOUNCE)
            except asyncio.TimeoutError:
                pass
