"""Several control planes over one API server: leader election on Leases.

Two "servers" here are two sets of candidates (`manager.elections`) over one in-process API
server and store (two server processes cannot share a SQLite or memory store; the leases
behave the same over any shared API). A monitor samples both all along and fails the test
if the same component ever leads in both.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.leaderelection import LEASES, LeaderElector
from k8py.server.controllers import manager
from k8py.server.controllers.base import is_pod_ready
from tests.conftest import eventually
from tests.integration.controllers.conftest import start_control_plane

DEPLOYMENTS = builtin("apps/v1", "deployments")
PODS = builtin("v1", "pods")
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
FAST = {"lease_duration": 3, "renew_deadline": 2, "retry_period": 0.5}


@pytest.fixture
async def plane(tmp_path):
    async with start_control_plane(tmp_path, nodes=2, loops=False) as control_plane:
        yield control_plane


def candidates(plane, **election):
    return manager.elections(plane.manager_client, plane.settings, None, plane.scheduling,
                             plane.client_for, **election)


class Servers:
    """Candidate sets run as tasks, with a monitor of who leads."""

    def __init__(self):
        self.tasks: dict[str, asyncio.Task] = {}
        self.electors: dict[str, list[LeaderElector]] = {}
        self.both: list[str] = []
        self.monitor = asyncio.create_task(self._watch())

    def start(self, name: str, found) -> None:
        self.electors[name] = [elector for elector, _ in found]
        self.tasks[name] = asyncio.create_task(manager.run(found))

    def leading(self, name: str) -> list[str]:
        return sorted(e.name for e in self.electors[name] if e.leading)

    async def stop(self, name: str) -> None:
        self.tasks[name].cancel()
        await asyncio.gather(self.tasks[name], return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            for lease in ("kube-controller-manager", "kube-scheduler"):
                holders = [n for n in self.electors
                           if lease in self.leading(n) and not self.tasks[n].done()]
                if len(holders) > 1:
                    self.both.append(lease)
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for name in self.tasks:
            await self.stop(name)
        self.monitor.cancel()
        await asyncio.gather(self.monitor, return_exceptions=True)
        assert not self.both, f"two leaders at once of {self.both}"


async def ready_pods(client: Client, wanted: int) -> bool:
    pods = (await client.list(PODS, "default", label_selector="app=web"))["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return len(live) == wanted and all(is_pod_ready(p) for p in live)


def web(replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "a", "image": "nginx"}]}}}}


async def scale(client: Client, replicas: int) -> None:
    await client.patch(DEPLOYMENTS, "web", {"spec": {"replicas": replicas}}, "default")


async def test_one_server_acts_and_a_released_lease_is_taken_over_at_once(plane):
    servers = Servers()
    try:
        servers.start("a", candidates(plane, **FAST))
        await eventually(lambda: servers.leading("a") == ["kube-controller-manager",
                                                          "kube-scheduler"], 10)
        servers.start("b", candidates(plane, **FAST))
        await plane.client.create(DEPLOYMENTS, web(2))
        await eventually(lambda: ready_pods(plane.client, 2), 20, 0.1)
        assert servers.leading("b") == []
        before = await plane.client.get(LEASES, "kube-controller-manager", "kube-system")

        # clean shutdown: both leases released (holder "", 1 s: the last test), and b, which
        # watches them, takes them at once
        await servers.stop("a")
        await scale(plane.client, 4)  # during the gap, if any
        await eventually(lambda: servers.leading("b") == ["kube-controller-manager",
                                                          "kube-scheduler"], 3)
        await eventually(lambda: ready_pods(plane.client, 4), 20, 0.1)
        after = await plane.client.get(LEASES, "kube-controller-manager", "kube-system")
        assert after["spec"]["leaseTransitions"] == before["spec"]["leaseTransitions"] + 1
        assert after["spec"]["holderIdentity"] == servers.electors["b"][0].identity
    finally:
        await servers.close()


async def test_a_server_that_stops_renewing_is_replaced_within_the_lease(plane):
    """Upstream's timings; the first leader vanishes without releasing (a crash)."""
    servers = Servers()
    try:
        servers.start("a", candidates(plane, release_on_cancel=False))
        await eventually(lambda: len(servers.leading("a")) == 2, 10)
        servers.start("b", candidates(plane))
        await plane.client.create(DEPLOYMENTS, web(1))
        await eventually(lambda: ready_pods(plane.client, 1), 20, 0.1)

        lease = await plane.client.get(LEASES, "kube-scheduler", "kube-system")
        spec = lease["spec"]
        assert re.match(r"^.+_[0-9a-f-]{36}$", spec["holderIdentity"])
        assert spec["leaseDurationSeconds"] == 15 and spec["leaseTransitions"] == 0
        assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])

        await servers.stop("a")
        stopped = asyncio.get_running_loop().time()
        held = await plane.client.get(LEASES, "kube-scheduler", "kube-system")
        assert held["spec"]["holderIdentity"] == spec["holderIdentity"]  # not released
        await scale(plane.client, 3)
        # b watches the lease: the 15 s run from a's last renewal (before a stopped), and b
        # tries the moment they are out, not a retry period later
        await eventually(lambda: len(servers.leading("b")) == 2, 20, 0.05)
        waited = asyncio.get_running_loop().time() - stopped
        print(f"taken over {waited:.2f} s after the leader stopped")
        assert 10 < waited <= 15.5, waited
        await eventually(lambda: ready_pods(plane.client, 3), 20, 0.1)
        taken = await plane.client.get(LEASES, "kube-scheduler", "kube-system")
        assert taken["spec"]["leaseTransitions"] == 1
        assert taken["spec"]["acquireTime"] != spec["acquireTime"]
    finally:
        await servers.close()


class Wrapped:
    """A transport passing everything to `inner`; subclasses change `call`."""

    def __init__(self, inner):
        self.inner = inner

    async def call(self, *args, **kwargs):
        return await self.inner.call(*args, **kwargs)

    def watch(self, *args, **kwargs):
        return self.inner.watch(*args, **kwargs)

    async def close(self) -> None:
        await self.inner.close()


class Partition(Wrapped):
    """A transport that hangs every call while cut: a leader that cannot reach its API."""

    def __init__(self, inner):
        super().__init__(inner)
        self.healed = asyncio.Event()
        self.healed.set()

    async def call(self, *args, **kwargs):
        await self.healed.wait()
        return await self.inner.call(*args, **kwargs)


async def test_a_leader_that_cannot_renew_stops_at_the_deadline_and_follows(plane):
    partition = Partition(plane.client.transport)
    first = LeaderElector(Client(partition), "default", "work", "first", **FAST)
    second = LeaderElector(plane.client, "default", "work", "second", **FAST)
    cancelled = asyncio.Event()

    async def lead() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    one = asyncio.create_task(first.lead_forever(lead))
    two = None
    try:
        await eventually(lambda: first.leading, 5)
        two = asyncio.create_task(second.lead_forever(lead))
        partition.healed.clear()
        cut = asyncio.get_running_loop().time()
        await asyncio.wait_for(cancelled.wait(), FAST["renew_deadline"] + 1)
        assert not first.leading
        assert asyncio.get_running_loop().time() - cut <= FAST["renew_deadline"] + 0.6
        await eventually(lambda: second.leading, FAST["lease_duration"] + 3)
        partition.healed.set()  # back: it sees the new holder and stays a follower
        await asyncio.sleep(FAST["retry_period"] * 3)
        assert not first.leading and first.holder == "second"
    finally:
        for task in (one, two):
            if task:
                task.cancel()
        await asyncio.gather(*(t for t in (one, two) if t), return_exceptions=True)


async def test_wind_down_and_release_survive_repeated_cancellation(plane):
    """`manager.run` cancels its electors again once one of them has ended (the bench's
    SIGTERM found the controller manager's lease unreleased): a further cancellation cuts
    neither the work's wind-down nor the release short."""
    stopped = asyncio.Event()

    async def lead():
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.2)  # winding down takes a while
            stopped.set()

    elector = LeaderElector(plane.client, "default", "repeated", "me", **FAST)
    task = asyncio.create_task(elector.lead_forever(lead))
    await eventually(lambda: elector.leading, 10)
    while not task.done():
        task.cancel()
        await asyncio.sleep(0)
    assert task.cancelled()
    assert stopped.is_set()
    lease = await plane.client.get(LEASES, "repeated", "default")
    assert lease["spec"]["holderIdentity"] == ""
    assert lease["spec"]["leaseDurationSeconds"] == 1


class CancelOnRenewal(Wrapped):
    """A transport that cancels `victim` in the very step a lease update is answered: the
    cancellation and the renewal's answer arrive together (Python 3.11's `asyncio.wait_for`
    returned the answer and dropped the cancellation, and the leader never stopped)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.victim: asyncio.Task | None = None

    async def call(self, method, *args, **kwargs):
        answer = await self.inner.call(method, *args, **kwargs)
        if self.victim is not None and method == "PUT":
            asyncio.get_running_loop().call_soon(self.victim.cancel)
            self.victim = None
        return answer


async def test_a_cancellation_that_meets_a_renewal_stops_the_leader(plane):
    transport = CancelOnRenewal(plane.client.transport)
    elector = LeaderElector(Client(transport), "default", "meeting", "me", **FAST)

    async def lead():
        await asyncio.Event().wait()

    task = asyncio.create_task(elector.lead_forever(lead))
    try:
        await eventually(lambda: elector.leading, 10)
        transport.victim = task
        done, _ = await asyncio.wait([task], timeout=FAST["renew_deadline"] * 3)
        assert done, "the leader went on leading after its cancellation"
        assert task.cancelled()
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)


async def test_a_released_lease_is_taken_at_once_not_at_the_next_retry(plane):
    """Upstream's 2 s retry period: a candidate watching the lease takes it as soon as the
    leader releases it (a clean stop), not at its next periodic try."""
    async def lead():
        await asyncio.Event().wait()

    first = LeaderElector(plane.client, "default", "handover", "first")
    second = LeaderElector(plane.client, "default", "handover", "second")
    one = asyncio.create_task(first.lead_forever(lead))
    two = None
    try:
        await eventually(lambda: first.leading, 10)
        two = asyncio.create_task(second.lead_forever(lead))
        await eventually(lambda: second.holder == "first", 10)  # it is waiting, watching
        await asyncio.sleep(second.retry_period / 2)  # mid-way between two of its tries
        one.cancel()
        await asyncio.gather(one, return_exceptions=True)  # released on the way out
        released = asyncio.get_running_loop().time()
        await eventually(lambda: second.leading, 5, 0.01)
        waited = asyncio.get_running_loop().time() - released
        print(f"taken over {waited:.2f} s after the release")
        assert waited < second.retry_period / 2, waited
    finally:
        for task in (one, two):
            if task:
                task.cancel()
        await asyncio.gather(*(t for t in (one, two) if t), return_exceptions=True)
