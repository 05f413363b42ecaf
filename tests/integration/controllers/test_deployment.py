"""The Deployment controller against a real API server, the ReplicaSet controller, the
scheduler and simulated nodes, driven by kubectl 1.32 as a user would: apply, scale, set
image, rollout status/undo/history/pause/resume/restart.

Rollouts are watched pod by pod: a watch from before the change sees every pod event in
order, so "available pods never fell below replicas - maxUnavailable" is checked on the real
history, not on samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from k8py.api.resources import builtin
from k8py.server.controllers.base import is_pod_ready
from tests.conftest import eventually

DEPLOYMENTS = builtin("apps/v1", "deployments")
REPLICASETS = builtin("apps/v1", "replicasets")
PODS = builtin("v1", "pods")


def manifest(name: str = "web", replicas: int = 10, image: str = "nginx:1",
             strategy: dict | None = None, **spec) -> str:
    pod_spec: dict = {"containers": [{"name": "app", "image": image}]}
    body = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
                 **({"strategy": strategy} if strategy else {}), **spec},
    }
    return json.dumps(body)


async def deployment(cluster, name: str = "web") -> dict:
    return await cluster.client.get(DEPLOYMENTS, name, "default")


async def sets_of(cluster, name: str = "web") -> list[dict]:
    listed = await cluster.client.list(REPLICASETS, "default", label_selector=f"app={name}")
    return sorted(listed["items"], key=lambda rs: int(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))


async def live_pods(cluster, name: str = "web") -> list[dict]:
    listed = await cluster.client.list(PODS, "default", label_selector=f"app={name}")
    return [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]


def settled(d: dict, replicas: int) -> bool:
    status = d.get("status") or {}
    return (status.get("observedGeneration") == d["metadata"]["generation"] and
            status.get("replicas", 0) == replicas and
            status.get("updatedReplicas", 0) == replicas and
            status.get("readyReplicas", 0) == replicas and
            status.get("availableReplicas", 0) == replicas)


async def wait_settled(cluster, replicas: int, name: str = "web", timeout: float = 15):
    async def check():
        return settled(await deployment(cluster, name), replicas)
    await eventually(check, timeout, 0.05, f"{name} settled at {replicas}")


class PodHistory:
    """Every pod event of one app, in order, folded into the live pods at each moment."""

    def __init__(self, cluster, app: str):
        self.cluster, self.app = cluster, app
        self.pods: dict[str, dict] = {}
        self.min_ready: int | None = None
        self.max_live = 0
        self.mixed = False   # pods of two templates alive at once
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        listed = await self.cluster.client.list(PODS, "default", label_selector=f"app={self.app}")
        for pod in listed["items"]:
            self.pods[pod["metadata"]["name"]] = pod
        self._fold()
        self.task = asyncio.create_task(self._run(listed["metadata"]["resourceVersion"]))

    async def _run(self, version: str) -> None:
        async for batch in self.cluster.client.watch(
                PODS, "default", resource_version=version, label_selector=f"app={self.app}"):
            for kind, pod in batch:
                if kind == "DELETED":
                    self.pods.pop(pod["metadata"]["name"], None)
                elif kind in ("ADDED", "MODIFIED"):
                    self.pods[pod["metadata"]["name"]] = pod
                self._fold()

    def _fold(self) -> None:
        live = [p for p in self.pods.values() if not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in live if is_pod_ready(p))
        self.min_ready = ready if self.min_ready is None else min(self.min_ready, ready)
        self.max_live = max(self.max_live, len(live))
        hashes = {p["metadata"]["labels"].get("pod-template-hash") for p in self.pods.values()}
        self.mixed |= len(hashes) > 1

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def test_apply_then_scale_up_and_to_zero(cluster):
    await cluster.akubectl("apply", "-f", "-", input=manifest(replicas=10))
    await wait_settled(cluster, 10)
    d = await deployment(cluster)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    conditions = {c["type"]: c for c in d["status"]["conditions"]}
    assert conditions["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    [rs] = await sets_of(cluster)
    pod_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": pod_hash}
    assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
    annotations = rs["metadata"]["annotations"]
    assert annotations["deployment.kubernetes.io/revision"] == "1"
    assert annotations["deployment.kubernetes.io/desired-replicas"] == "10"
    assert annotations["deployment.kubernetes.io/max-replicas"] == "13"  # 25% surge, rounded up
    assert all(p["metadata"]["labels"]["pod-template-hash"] == pod_hash
               for p in await live_pods(cluster))

    await cluster.akubectl("scale", "deployment/web", "--replicas=30")
    await wait_settled(cluster, 30)
    assert len(await live_pods(cluster)) == 30
    [rs] = await sets_of(cluster)
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "30"

    await cluster.akubectl("scale", "deployment/web", "--replicas=0")
    await wait_settled(cluster, 0)

    async def no_pods():
        return not await live_pods(cluster)
    await eventually(no_pods, 10, 0.05, "pods gone")
    out = await cluster.akubectl("get", "deployment", "web")
    assert "0/0" in out.stdout


async def test_set_image_keeps_availability_then_undo(cluster):
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}
    await cluster.akubectl("apply", "-f", "-", input=manifest(replicas=10, strategy=strategy))
    await wait_settled(cluster, 10)
    history = PodHistory(cluster, "web")
    await history.start()
    try:
        await cluster.akubectl("set", "image", "deployment/web", "app=nginx:2")
        out = await cluster.akubectl("rollout", "status", "deployment/web", "--timeout=20s",
                                     timeout=30)
        assert "successfully rolled out" in out.stdout
        await wait_settled(cluster, 10)
    finally:
        await history.stop()
    assert history.min_ready is not None and history.min_ready >= 10 - 2
    assert history.max_live <= 10 + 3
    pods = await live_pods(cluster)
    assert len(pods) == 10
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"nginx:2"}
    first, second = await sets_of(cluster)
    assert first["spec"]["replicas"] == 0 and second["spec"]["replicas"] == 10
    assert second["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    d = await deployment(cluster)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"

    await cluster.akubectl("rollout", "undo", "deployment/web")
    await cluster.akubectl("rollout", "status", "deployment/web", "--timeout=20s", timeout=30)
    await wait_settled(cluster, 10)
    d = await deployment(cluster)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    sets = await sets_of(cluster)
    assert [rs["metadata"]["name"] for rs in sets] == [second["metadata"]["name"],
                                                       first["metadata"]["name"]]
    assert sets[1]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert sets[1]["spec"]["replicas"] == 10
    assert {p["spec"]["containers"][0]["image"] for p in await live_pods(cluster)} == {"nginx:1"}
    out = await cluster.akubectl("rollout", "history", "deployment/web")
    revisions = [line.split()[0] for line in out.stdout.splitlines()[2:] if line.strip()]
    assert revisions == ["2", "3"]


async def test_recreate_never_mixes_templates(cluster):
    await cluster.akubectl("apply", "-f", "-", input=manifest(
        replicas=5, strategy={"type": "Recreate"}))
    await wait_settled(cluster, 5)
    history = PodHistory(cluster, "web")
    await history.start()
    try:
        await cluster.akubectl("set", "image", "deployment/web", "app=nginx:2")
        await cluster.akubectl("rollout", "status", "deployment/web", "--timeout=20s",
                               timeout=30)
        await wait_settled(cluster, 5)
    finally:
        await history.stop()
    assert not history.mixed
    assert {p["spec"]["containers"][0]["image"] for p in await live_pods(cluster)} == {"nginx:2"}


async def test_revision_history_limit_and_restart(cluster):
    await cluster.akubectl("apply", "-f", "-", input=manifest(
        replicas=3, revisionHistoryLimit=1))
    await wait_settled(cluster, 3)
    for image in ("nginx:2", "nginx:3"):
        await cluster.akubectl("set", "image", "deployment/web", f"app={image}")
        await cluster.akubectl("rollout", "status", "deployment/web", "--timeout=20s",
                               timeout=30)
    await cluster.akubectl("rollout", "restart", "deployment/web")
    await cluster.akubectl("rollout", "status", "deployment/web", "--timeout=20s", timeout=30)
    await wait_settled(cluster, 3)

    async def two_sets():
        return len(await sets_of(cluster)) == 2
    await eventually(two_sets, 10, 0.05, "old sets cleaned up")
    old, new = await sets_of(cluster)
    assert [old["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            new["metadata"]["annotations"]["deployment.kubernetes.io/revision"]] == ["3", "4"]
    annotations = new["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    assert old["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:3"


async def test_pause_scales_but_does_not_roll_out(cluster):
    await cluster.akubectl("apply", "-f", "-", input=manifest(replicas=4))
    await wait_settled(cluster, 4)
    await cluster.akubectl("rollout", "pause", "deployment/web")
    await cluster.akubectl("set", "image", "deployment/web", "app=nginx:2")
    await cluster.akubectl("annotate", "deployment/web", "kubernetes.io/change-cause=to v2")
    await cluster.akubectl("scale", "deployment/web", "--replicas=6")

    async def scaled():
        d = await deployment(cluster)
        status = d.get("status") or {}
        return status.get("readyReplicas") == 6 and \
            status.get("observedGeneration") == d["metadata"]["generation"]
    await eventually(scaled, 10, 0.05, "paused deployment scaled")
    d = await deployment(cluster)
    progressing = [c for c in d["status"]["conditions"] if c["type"] == "Progressing"][0]
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")
    assert len(await sets_of(cluster)) == 1

    await cluster.akubectl("rollout", "resume", "deployment/web")
    await cluster.akubectl("rollout", "status", "deployment/web", "--timeout=20s", timeout=30)
    await wait_settled(cluster, 6)
    old, new = await sets_of(cluster)
    assert new["metadata"]["annotations"]["kubernetes.io/change-cause"] == "to v2"
    assert new["spec"]["replicas"] == 6 and old["spec"]["replicas"] == 0


async def test_progress_deadline_exceeded(cluster):
    body = json.loads(manifest(replicas=2, progressDeadlineSeconds=1))
    # Bound to a node that does not exist: the pods never start.
    body["spec"]["template"]["spec"]["nodeName"] = "nowhere"
    await cluster.akubectl("apply", "-f", "-", input=json.dumps(body))

    async def timed_out():
        d = await deployment(cluster)
        return any(c["type"] == "Progressing" and c["reason"] == "ProgressDeadlineExceeded"
                   and c["status"] == "False" for c in (d.get("status") or {}).get(
                       "conditions") or ())
    await eventually(timed_out, 10, 0.1, "ProgressDeadlineExceeded")
    out = await cluster.akubectl("rollout", "status", "deployment/web", "--timeout=5s",
                                 check=False)
    assert out.returncode != 0
    assert "exceeded its progress deadline" in out.stderr
    d = await deployment(cluster)
    available = [c for c in d["status"]["conditions"] if c["type"] == "Available"][0]
    assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")
