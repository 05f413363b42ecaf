"""Leader election on a coordination.k8s.io Lease, with client-go's leaderelection semantics.

- Candidates race to write their identity (`<hostname>_<uuid>`) into `spec.holderIdentity`
  by compare-and-swap (the update carries the resourceVersion last read), so of two writers
  exactly one wins.
- A lease held by another is valid while `leaseDurationSeconds` have not passed since this
  candidate last *saw the lease change* (its own clock, client-go's observedTime): clocks of
  different hosts are never compared. An empty holder (a released lease) is free at once.
- Taking over sets `acquireTime` and increments `leaseTransitions`; renewing keeps both and
  moves `renewTime` (MicroTime). Defaults: 15 s lease, 10 s renew deadline, 2 s retry.
- A candidate also watches the lease while it waits, so it sees each renewal when it
  happens and tries again the moment the lease would expire (client-go polls only, every
  `retry_period`: up to two retry periods later); the rules above are unchanged.
- A leader renews every `retry_period`. It stops leading AT ONCE (its work is cancelled) when
  it sees another holder in the lease, or when no renewal succeeded for `renew_deadline`
  (each attempt is itself cut at the deadline, so a hung API call cannot keep it leading).
  `renew_deadline` < lease duration, so it has stopped before anyone else may take over.
- `lead_forever` goes back to acquiring after a loss; on cancellation it releases the lease
  (client-go's ReleaseOnCancel: holder "" and a 1 s duration) so a successor need not wait
  out the lease. Neither the wind-down of the work nor the release is cut short by a further
  cancellation (it is raised after them): the release is bounded by `renew_deadline`.
  `release_on_cancel=False` leaves the lease to expire, as a crash would. A cancellation
  that arrives as a renewal is answered still stops the leader (the deadline is an
  `asyncio.timeout`, not Python 3.11's `wait_for`, which dropped it: tests/unit/test_timeouts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.resources import builtin
from k8py.client.client import Client

log = logging.getLogger(__name__)
LEASES = builtin("coordination.k8s.io/v1", "leases")


class LeaderElector:
    def __init__(self, client: Client, namespace: str, name: str, identity: str, *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, release_on_cancel: bool = True):
        self.client, self.namespace, self.name = client, namespace, name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self.leading = False
        self._observed: dict[str, Any] | None = None  # the lease as last read or written
        self._observed_time = 0.0  # when its spec last changed, on this loop's clock
        self._released = asyncio.Event()  # the watch saw the lease given up, while waiting

    @property
    def holder(self) -> str:
        """The holder in the lease as last seen ("" when free or never seen)."""
        return ((self._observed or {}).get("spec") or {}).get("holderIdentity") or ""

    def _observe(self, lease: dict[str, Any]) -> None:
        old = (self._observed or {}).get("spec")
        self._observed = lease
        if lease.get("spec") != old:
            self._observed_time = asyncio.get_running_loop().time()

    def _lease_valid(self) -> bool:
        spec = (self._observed or {}).get("spec") or {}
        duration = spec.get("leaseDurationSeconds") or self.lease_duration
        return self._observed_time + duration > asyncio.get_running_loop().time()

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt to take or renew the lease (client-go's tryAcquireOrRenew)."""
        stamp = timestamps.micro_now()
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except errors.NotFound:
            try:
                self._observe(await self.client.create(LEASES, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec}))
                return True
            except (errors.AlreadyExists, errors.Conflict):
                return False
        self._observe(lease)
        holder = self.holder
        if holder and holder != self.identity and self._lease_valid():
            return False
        current = lease.get("spec") or {}
        if holder == self.identity:
            spec["acquireTime"] = current.get("acquireTime") or stamp
            spec["leaseTransitions"] = current.get("leaseTransitions") or 0
        else:
            spec["leaseTransitions"] = (current.get("leaseTransitions") or 0) + 1
        try:
            self._observe(await self.client.update(LEASES, {**lease, "spec": spec}))
            return True
        except (errors.Conflict, errors.NotFound):
            return False

    async def _acquire(self) -> None:
        """Try every `retry_period` and, in between, watch the lease: each renewal is seen
        as it happens (not up to a retry period late, as by polling alone) and the next try
        comes no later than the moment the lease, as last seen, expires. A crashed leader is
        so replaced `leaseDurationSeconds` after its last renewal, not up to two retry
        periods more; a released lease (holder "") is tried the moment it is seen, so a
        server stopping cleanly hands over at once, not up to a retry period later."""
        watcher = asyncio.create_task(self._watch_lease())
        try:
            while True:
                self._released.clear()  # a release seen from here on wakes the wait below
                try:
                    if await self._try_acquire_or_renew():
                        return
                except errors.StatusError as exc:
                    log.warning("leader election %s/%s: %s", self.namespace, self.name,
                                exc.message)
                try:
                    async with asyncio.timeout(self._until_next_try()):
                        await self._released.wait()
                except TimeoutError:
                    pass
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    def _until_next_try(self) -> float:
        if not self.holder or self.holder == self.identity:
            return self.retry_period
        spec = (self._observed or {}).get("spec") or {}
        duration = spec.get("leaseDurationSeconds") or self.lease_duration
        expiry = self._observed_time + duration - asyncio.get_running_loop().time()
        return min(self.retry_period, max(expiry + 0.01, 0.01))

    async def _watch_lease(self) -> None:
        """Observe the lease's changes while waiting to lead; a broken watch (or one that
        cannot start) only falls back to the retry period's polling until the next try."""
        while True:
            try:
                listed = await self.client.list(LEASES, self.namespace,
                                                field_selector=f"metadata.name={self.name}")
                async for batch in self.client.watch(
                        LEASES, self.namespace,
                        resource_version=listed["metadata"]["resourceVersion"],
                        field_selector=f"metadata.name={self.name}", timeout_seconds=300):
                    for kind, lease in batch:
                        if kind in ("ADDED", "MODIFIED"):
                            self._observe(lease)
                            if not self.holder:
                                self._released.set()
            except (errors.StatusError, OSError) as exc:
                log.debug("watching %s/%s: %s", self.namespace, self.name, exc)
            await asyncio.sleep(self.retry_period)

    async def run(self, lead: Callable[[], Awaitable[None]]) -> bool:
        """One term: wait to lead, then run `lead()` while renewing. Returns False when the
        lease is lost (after cancelling `lead`), True when `lead` returned by itself."""
        await self._acquire()
        log.info("%s became leader of %s/%s", self.identity, self.namespace, self.name)
        self.leading = True
        loop = asyncio.get_running_loop()
        work = asyncio.create_task(lead())
        try:
            last_renewal = loop.time()
            while not work.done():
                await asyncio.wait([work], timeout=self.retry_period)
                if work.done():
                    break
                left = last_renewal + self.renew_deadline - loop.time()
                try:
                    async with asyncio.timeout(max(left, 0.001)):
                        renewed = await self._try_acquire_or_renew()
                except (errors.StatusError, asyncio.TimeoutError, OSError) as exc:
                    log.warning("%s could not renew %s/%s: %s", self.identity,
                                self.namespace, self.name, exc)
                    renewed = False
                if renewed:
                    last_renewal = loop.time()
                elif self.holder and self.holder != self.identity:
                    log.error("%s lost %s/%s to %s", self.identity, self.namespace,
                              self.name, self.holder)
                    break
                elif loop.time() - last_renewal >= self.renew_deadline:
                    log.error("%s lost %s/%s: not renewed within %ss", self.identity,
                              self.namespace, self.name, self.renew_deadline)
                    break
        finally:
            self.leading = False
            finished = work.done()
            work.cancel()
            await _wait_out(work)  # stopped for good before anyone may take over
        if not work.cancelled() and work.exception():
            raise work.exception()
        return finished

    async def lead_forever(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Terms one after the other, until cancelled (or `lead` returns); releases the
        lease on the way out when `release_on_cancel`."""
        leading_at_end = False
        try:
            while not await self.run(lead):
                pass
        except asyncio.CancelledError:
            leading_at_end = self.holder == self.identity
            raise
        finally:
            if self.release_on_cancel and leading_at_end:
                # a second cancellation (a caller stopping several electors) must not cut
                # the release short: the successor would wait out the whole lease
                await _wait_out(asyncio.ensure_future(self._release_within_deadline()))

    async def _release_within_deadline(self) -> None:
        try:
            async with asyncio.timeout(self.renew_deadline):
                await self.release()
        except (asyncio.TimeoutError, OSError) as exc:
            log.warning("%s could not release %s/%s: %s", self.identity, self.namespace,
                        self.name, exc or type(exc).__name__)

    async def release(self) -> None:
        """Give the lease up if this candidate holds it, so a successor takes over at once.
        Compare-and-swap on the lease as last seen: a lease already taken over is left."""
        if self.holder != self.identity or self._observed is None:
            return
        stamp = timestamps.micro_now()
        spec = {"holderIdentity": "", "leaseDurationSeconds": 1,
                "acquireTime": stamp, "renewTime": stamp,
                "leaseTransitions": (self._observed.get("spec") or {}).get(
                    "leaseTransitions") or 0}
        try:
            self._observe(await self.client.update(LEASES, {**self._observed, "spec": spec}))
            log.info("%s released %s/%s", self.identity, self.namespace, self.name)
        except errors.StatusError as exc:
            log.warning("%s could not release %s/%s: %s", self.identity, self.namespace,
                        self.name, exc.message)


async def _wait_out(task: asyncio.Future) -> None:
    """Wait for `task` to end, even when cancelled meanwhile (the cancellation is raised once
    it has ended); the task's own outcome is left for the caller to read."""
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
