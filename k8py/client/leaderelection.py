"""Leader election on a coordination.k8s.io Lease (client-go's leaderelection).

Candidates race to write their identity into `spec.holderIdentity` with compare-and-swap;
the holder renews `spec.renewTime` every `retry_period`. Others take over once
`renewTime + leaseDurationSeconds` has passed without renewal. A leader that cannot renew
within `renew_deadline` stops leading: its work is cancelled, so two leaders never act at once
for longer than the lease allows. Stepping down on shutdown clears the holder, so a successor
need not wait out the lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from k8py.api import errors, timestamps
from k8py.api.resources import builtin
from k8py.client.client import Client

log = logging.getLogger(__name__)
LEASES = builtin("coordination.k8s.io/v1", "leases")


class LeaderElector:
    def __init__(self, client: Client, namespace: str, name: str, identity: str, *,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0):
        self.client, self.namespace, self.name = client, namespace, name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.leading = False

    async def _try_acquire(self) -> bool:
        """One attempt to take or renew the lease."""
        now = time.time()
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except errors.NotFound:
            lease = None
        stamp = timestamps.micro_now()
        spec = {"holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}
        if lease is None:
            try:
                await self.client.create(LEASES, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec})
                return True
            except (errors.AlreadyExists, errors.Conflict):
                return False
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        if holder and holder != self.identity:
            renewed = timestamps.parse(current.get("renewTime"))
            duration = current.get("leaseDurationSeconds") or self.lease_duration
            if renewed and now - renewed < duration:
                return False
        if holder == self.identity:
            spec["acquireTime"] = current.get("acquireTime", spec["acquireTime"])
            spec["leaseTransitions"] = current.get("leaseTransitions", 0)
        else:
            spec["leaseTransitions"] = current.get("leaseTransitions", 0) + 1
        try:
            await self.client.update(LEASES, {**lease, "spec": spec})
            return True
        except (errors.Conflict, errors.NotFound):
            return False

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Wait to lead, then run `lead()` while renewing; returns when leadership is lost
        (after cancelling `lead`) or when `lead` returns."""
        while True:
            try:
                if await self._try_acquire():
                    break
            except errors.StatusError as exc:
                log.warning("leader election: %s", exc.message)
            await asyncio.sleep(self.retry_period)
        log.info("%s became leader of %s/%s", self.identity, self.namespace, self.name)
        self.leading = True
        work = asyncio.create_task(lead())
        try:
            last_renewal = asyncio.get_running_loop().time()
            while not work.done():
                await asyncio.wait([work], timeout=self.retry_period)
                if work.done():
                    break
                try:
                    renewed = await self._try_acquire()
                except errors.StatusError:
                    renewed = False
                now = asyncio.get_running_loop().time()
                if renewed:
                    last_renewal = now
                elif now - last_renewal > self.renew_deadline:
                    log.error("%s lost leadership of %s/%s", self.identity, self.namespace,
                              self.name)
                    break
        finally:
            self.leading = False
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
        if work.done() and not work.cancelled() and work.exception():
            raise work.exception()

    async def release(self) -> None:
        """Give the lease up, if held, so a successor takes over at once."""
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1}
                await self.client.update(LEASES, {**lease, "spec": spec})
        except errors.StatusError:
            pass
