"""The StatefulSet controller against a real API server, the scheduler and simulated nodes:
ordered start (seen on a watch), claims from templates, scale-down from the highest ordinal,
recreation under the same name, and partitioned rolling updates."""

from __future__ import annotations

import asyncio

from k8py.api.resources import builtin
from tests.conftest import eventually

STATEFULSETS = builtin("apps/v1", "statefulsets")
PODS = builtin("v1", "pods")
CLAIMS = builtin("v1", "persistentvolumeclaims")


def statefulset(name: str, replicas: int = 3, **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "serviceName": name,
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "db:1"}]}},
                     **spec}}


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or ())


class PodLog:
    """Every pod event in the namespace, in order, from a watch started before the test acts."""

    def __init__(self, client):
        self.client = client
        self.events: list[tuple[str, str, bool, bool, str]] = []  # kind, name, ready, deleting, uid
        self._task: asyncio.Task | None = None

    async def __aenter__(self):
        rv = (await self.client.list(PODS, "default"))["metadata"]["resourceVersion"]

        async def follow():
            async for batch in self.client.watch(PODS, "default", resource_version=rv):
                for kind, pod in batch:
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self.events.append((kind, pod["metadata"]["name"], is_ready(pod),
                                            bool(pod["metadata"].get("deletionTimestamp")),
                                            pod["metadata"]["uid"]))

        self._task = asyncio.create_task(follow())
        return self

    async def __aexit__(self, *exc):
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def first(self, predicate) -> int:
        return next(i for i, event in enumerate(self.events) if predicate(event))


async def ready_pods(client, name: str) -> dict[str, dict]:
    pods = (await client.list(PODS, "default", label_selector=f"app={name}"))["items"]
    return {p["metadata"]["name"]: p for p in pods
            if is_ready(p) and not p["metadata"].get("deletionTimestamp")}


async def pod_names(client, name: str) -> set[str]:
    pods = (await client.list(PODS, "default", label_selector=f"app={name}"))["items"]
    return {p["metadata"]["name"] for p in pods}


async def has_status(client, name: str, **fields) -> bool:
    status = (await client.get(STATEFULSETS, name, "default")).get("status") or {}
    return all(status.get(k) == v for k, v in fields.items())


async def test_ordered_start_claims_scale_down_and_recreation(cluster):
    client = cluster.client
    claim = {"metadata": {"name": "data", "labels": {"tier": "storage"}},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "1Gi"}}}}
    async with PodLog(client) as log:
        await client.create(STATEFULSETS, statefulset("web", volumeClaimTemplates=[claim]),
                            "default")
        await eventually(lambda: _count(ready_pods(client, "web"), 3), 15, 0.1,
                         "three ready pods")
        # OrderedReady: web-i appears only after web-(i-1) was seen Ready
        for i in (1, 2):
            created = log.first(lambda e: e[0] == "ADDED" and e[1] == f"web-{i}")
            ready_before = log.first(lambda e: e[1] == f"web-{i - 1}" and e[2])
            assert ready_before < created, log.events

        pods = await ready_pods(client, "web")
        assert set(pods) == {"web-0", "web-1", "web-2"}
        for i in range(3):
            pod = pods[f"web-{i}"]
            labels = pod["metadata"]["labels"]
            assert labels["statefulset.kubernetes.io/pod-name"] == f"web-{i}"
            assert labels["apps.kubernetes.io/pod-index"] == str(i)
            assert labels["controller-revision-hash"].startswith("web-")
            assert pod["spec"]["hostname"] == f"web-{i}" and pod["spec"]["subdomain"] == "web"
            assert {"name": "data", "persistentVolumeClaim": {"claimName": f"data-web-{i}"}} \
                in pod["spec"]["volumes"]
        claims = {c["metadata"]["name"]: c
                  for c in (await client.list(CLAIMS, "default"))["items"]}
        assert set(claims) == {"data-web-0", "data-web-1", "data-web-2"}
        assert claims["data-web-1"]["metadata"]["labels"] == {"tier": "storage", "app": "web"}
        assert claims["data-web-1"]["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
        await eventually(lambda: has_status(client, "web", replicas=3, readyReplicas=3,
                                            availableReplicas=3, currentReplicas=3,
                                            updatedReplicas=3, observedGeneration=1), 10, 0.1)
        status = (await client.get(STATEFULSETS, "web", "default"))["status"]
        assert status["currentRevision"] == status["updateRevision"] == \
            pods["web-0"]["metadata"]["labels"]["controller-revision-hash"]

        # scale down: the highest ordinal goes first, one at a time
        await client.patch(STATEFULSETS, "web", {"spec": {"replicas": 1}}, "default")
        await eventually(lambda: _equals(pod_names(client, "web"), {"web-0"}), 15, 0.1)
        gone_2 = log.first(lambda e: e[0] == "DELETED" and e[1] == "web-2")
        leaving_1 = log.first(lambda e: e[1] == "web-1" and (e[3] or e[0] == "DELETED"))
        assert gone_2 < leaving_1, log.events
        claims = {c["metadata"]["name"] for c in (await client.list(CLAIMS, "default"))["items"]}
        assert claims == {"data-web-0", "data-web-1", "data-web-2"}  # retained

        # a deleted pod comes back under its name, with its claim
        old_uid = pods["web-0"]["metadata"]["uid"]
        await client.delete(PODS, "web-0", "default")

        async def replaced():
            pod = (await ready_pods(client, "web")).get("web-0")
            return pod is not None and pod["metadata"]["uid"] != old_uid
        await eventually(replaced, 10, 0.1, "web-0 recreated")
        await eventually(lambda: has_status(client, "web", replicas=1, readyReplicas=1),
                         10, 0.1)


async def test_partitioned_rolling_update(cluster):
    client = cluster.client
    await client.create(STATEFULSETS, statefulset("db", updateStrategy={
        "type": "RollingUpdate", "rollingUpdate": {"partition": 1}}), "default")
    await eventually(lambda: _count(ready_pods(client, "db"), 3), 15, 0.1)
    before = await ready_pods(client, "db")
    first_revision = before["db-0"]["metadata"]["labels"]["controller-revision-hash"]

    async with PodLog(client) as log:
        sts = await client.get(STATEFULSETS, "db", "default")
        sts["spec"]["template"]["spec"]["containers"][0]["image"] = "db:2"
        await client.update(STATEFULSETS, sts)

        async def images():
            return {n: p["spec"]["containers"][0]["image"]
                    for n, p in (await ready_pods(client, "db")).items()}

        await eventually(lambda: _equals(images(), {"db-0": "db:1", "db-1": "db:2",
                                                    "db-2": "db:2"}), 15, 0.1)
        await eventually(lambda: has_status(client, "db", replicas=3, readyReplicas=3,
                                            updatedReplicas=2, currentReplicas=1,
                                            currentRevision=first_revision), 10, 0.1)
        status = (await client.get(STATEFULSETS, "db", "default"))["status"]
        assert status["updateRevision"] != first_revision
        # highest first, the next only once the replacement is Ready
        new_2_ready = log.first(lambda e: e[1] == "db-2" and e[2] and
                                e[4] != before["db-2"]["metadata"]["uid"])
        leaving_1 = log.first(lambda e: e[1] == "db-1" and (e[3] or e[0] == "DELETED"))
        assert new_2_ready < leaving_1, log.events
        assert before["db-0"]["metadata"]["uid"] == \
            (await ready_pods(client, "db"))["db-0"]["metadata"]["uid"]

        # a deleted pod below the partition comes back at the current revision
        await client.delete(PODS, "db-0", "default")

        async def back_old():
            pod = (await ready_pods(client, "db")).get("db-0")
            return pod is not None and pod["metadata"]["uid"] != before["db-0"]["metadata"][
                "uid"] and pod["spec"]["containers"][0]["image"] == "db:1"
        await eventually(back_old, 10, 0.1, "db-0 recreated from the current revision")

    # partition 0 finishes the rollout; the update revision becomes current
    await client.patch(STATEFULSETS, "db", {"spec": {"updateStrategy": {
        "rollingUpdate": {"partition": 0}}}}, "default")
    await eventually(lambda: _equals(images(), {f"db-{i}": "db:2" for i in range(3)}), 15, 0.1)
    await eventually(lambda: has_status(client, "db", updatedReplicas=3, currentReplicas=3,
                                        currentRevision=status["updateRevision"]), 10, 0.1)


async def test_parallel_and_on_delete(cluster):
    client = cluster.client
    await client.create(STATEFULSETS, statefulset("par", podManagementPolicy="Parallel",
                                                  updateStrategy={"type": "OnDelete"}),
                        "default")
    await eventually(lambda: _count(ready_pods(client, "par"), 3), 10, 0.1)
    sts = await client.get(STATEFULSETS, "par", "default")
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = "db:2"
    await client.update(STATEFULSETS, sts)
    await eventually(lambda: has_status(client, "par", observedGeneration=2, updatedReplicas=0),
                     10, 0.1)
    await client.delete(PODS, "par-1", "default")

    async def images():
        return {n: p["spec"]["containers"][0]["image"]
                for n, p in (await ready_pods(client, "par")).items()}
    await eventually(lambda: _equals(images(), {"par-0": "db:1", "par-1": "db:2",
                                                "par-2": "db:1"}), 10, 0.1)
    await client.patch(STATEFULSETS, "par", {"spec": {"replicas": 0}}, "default")
    await eventually(lambda: _equals(pod_names(client, "par"), set()), 10, 0.1)


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


async def _count(awaitable, expected: int) -> bool:
    return len(await awaitable) == expected
