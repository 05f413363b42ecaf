"""The CronJob controller against a real API server, the Job controller, the scheduler and
simulated nodes. The CronJob controller's clock is frozen and moved forward by the test, so
minutes pass at once; a patch to the CronJob makes the controller look again."""

from __future__ import annotations

import asyncio
import time

import pytest

from k8py.api.resources import builtin
from k8py.server.controllers.cronjob import SCHEDULED_TIMESTAMP, CronJobController
from tests.conftest import eventually

CRONJOBS = builtin("batch/v1", "cronjobs")
JOBS = builtin("batch/v1", "jobs")


class Clock:
    def __init__(self):
        self.start = self.now = time.time()


@pytest.fixture(autouse=True)
async def clock(monkeypatch):
    """Autouse, so the clock is frozen before the `cluster` fixture starts the controllers."""
    frozen = Clock()
    monkeypatch.setattr(CronJobController, "now", staticmethod(lambda: frozen.now))
    return frozen


def cronjob(name: str, schedule: str = "* * * * *", run_seconds: float = 0.2,
            **spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"schedule": schedule, "jobTemplate": {
                "metadata": {"labels": {"app": name}},
                "spec": {"template": {
                    "metadata": {"annotations": {
                        "k8py.io/simulate-exit-code": "0",
                        "k8py.io/simulate-run-seconds": str(run_seconds)}},
                    "spec": {"containers": [{"name": "c", "image": "tick:1"}],
                             "restartPolicy": "Never"}}}},
                **spec}}


async def advance(cluster, clock: Clock, name: str, seconds: float) -> None:
    """Move the CronJob clock to `seconds` after the test began, and poke the CronJob."""
    clock.now = clock.start + seconds
    await cluster.client.patch(CRONJOBS, name, {"metadata": {"annotations": {
        "test/clock": str(seconds)}}}, "default")


async def jobs_of(cluster, name: str) -> list[dict]:
    items = (await cluster.client.list(JOBS, "default"))["items"]
    return sorted((j for j in items if j["metadata"].get("labels", {}).get("app") == name),
                  key=lambda j: j["metadata"]["name"])


def complete(job: dict) -> bool:
    return any(c["type"] == "Complete" and c["status"] == "True"
               for c in (job.get("status") or {}).get("conditions") or ())


async def test_fires_and_prunes_history(cluster, clock):
    client = cluster.client
    await client.create(CRONJOBS, cronjob("tick", timeZone="Asia/Kolkata",
                                          successfulJobsHistoryLimit=1))
    await asyncio.sleep(0.3)
    assert await jobs_of(cluster, "tick") == []  # the clock stands still: no minute passed

    names = []
    for step, seconds in enumerate((90, 150, 210)):
        await advance(cluster, clock, "tick", seconds)

        async def ran():
            jobs = await jobs_of(cluster, "tick")
            fresh = [j for j in jobs if j["metadata"]["name"] not in names]
            return fresh[0] if fresh and complete(fresh[0]) else None

        job = await eventually(ran, timeout=10, interval=0.05, what=f"run {step}")
        names.append(job["metadata"]["name"])
        minutes = int(clock.now) // 60
        assert job["metadata"]["name"] == f"tick-{minutes}"
        stamp = job["metadata"]["annotations"][SCHEDULED_TIMESTAMP]
        assert stamp.endswith("+05:30")
        assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"

        async def settled():
            current = await client.get(CRONJOBS, "tick", "default")
            status = current.get("status") or {}
            return not status.get("active") and status.get("lastSuccessfulTime") and \
                [j["metadata"]["name"] for j in await jobs_of(cluster, "tick")] == names[-1:]

        await eventually(settled, timeout=10, interval=0.05, what=f"history after run {step}")

    status = (await client.get(CRONJOBS, "tick", "default"))["status"]
    expected = time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(clock.now))
    assert status["lastScheduleTime"] == expected


async def test_forbid_then_replace(cluster, clock):
    client = cluster.client
    await client.create(CRONJOBS, cronjob("long", run_seconds=60, concurrencyPolicy="Forbid"))
    await advance(cluster, clock, "long", 90)

    async def active():
        status = (await client.get(CRONJOBS, "long", "default")).get("status") or {}
        return status.get("active")

    first = (await eventually(active, timeout=10, what="first run"))[0]
    await advance(cluster, clock, "long", 150)
    await asyncio.sleep(0.5)
    assert [j["metadata"]["name"] for j in await jobs_of(cluster, "long")] == [first["name"]]

    await client.patch(CRONJOBS, "long", {"spec": {"concurrencyPolicy": "Replace"}}, "default")
    await advance(cluster, clock, "long", 210)

    async def replaced():
        names = [j["metadata"]["name"] for j in await jobs_of(cluster, "long")]
        refs = await active() or []
        return len(names) == 1 and names[0] != first["name"] and \
            [r["name"] for r in refs] == names

    await eventually(replaced, timeout=10, interval=0.05, what="replaced")


async def test_starting_deadline(cluster, clock):
    client = cluster.client
    await client.create(CRONJOBS, cronjob("strict", startingDeadlineSeconds=10))
    boundary = (int(clock.start) // 60 + 1) * 60 - clock.start  # seconds to the next minute
    await advance(cluster, clock, "strict", boundary + 60 + 30)  # 30 s late: missed
    await asyncio.sleep(0.5)
    assert await jobs_of(cluster, "strict") == []
    await advance(cluster, clock, "strict", boundary + 120 + 5)  # 5 s late: runs

    async def ran():
        return await jobs_of(cluster, "strict")

    jobs = await eventually(ran, timeout=10, what="run within the deadline")
    assert jobs[0]["metadata"]["name"] == f"strict-{int(clock.start + boundary) // 60 + 2}"


async def test_create_job_from_cronjob(cluster, clock):
    await cluster.client.create(CRONJOBS, cronjob("manual", suspend=True))
    await cluster.akubectl("create", "job", "by-hand", "--from=cronjob/manual")
    await cluster.akubectl("wait", "--for=condition=complete", "job/by-hand", "--timeout=10s")

    async def succeeded():
        status = (await cluster.client.get(CRONJOBS, "manual", "default")).get("status") or {}
        return status.get("lastSuccessfulTime") and not status.get("active")

    await eventually(succeeded, timeout=10, what="cronjob saw its manual job")
