"""Controllers write upstream's Events, so `kubectl describe` shows what happened: a
Deployment scaling its ReplicaSet, the ReplicaSet creating and deleting pods, a Job creating
its pod and completing."""

from __future__ import annotations

from tests.conftest import eventually
from tests.integration.controllers.test_job import JOBS, job

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: web:1}]}
"""


async def _described(cluster, *args: str, wanted: tuple[str, ...]) -> str:
    async def has_all():
        out = (await cluster.akubectl("describe", *args)).stdout
        return out if all(w in out for w in wanted) else None
    return await eventually(has_all, timeout=20, interval=0.3,
                            what=f"{' '.join(args)} to show {wanted}")


async def test_deployment_and_replicaset_events_in_describe(cluster):
    await cluster.akubectl("apply", "-f", "-", input=DEPLOYMENT)
    out = await _described(cluster, "deployment", "web",
                           wanted=("ScalingReplicaSet", "Scaled up replica set web-"))
    assert "deployment-controller" in out and "from 0 to 2" in out
    await _described(cluster, "replicaset", "-l", "app=web",
                     wanted=("SuccessfulCreate", "Created pod: web-", "replicaset-controller"))
    await cluster.akubectl("scale", "deployment", "web", "--replicas=1")
    await _described(cluster, "deployment", "web", wanted=("Scaled down replica set web-",
                                                           "from 2 to 1"))
    await _described(cluster, "replicaset", "-l", "app=web",
                     wanted=("SuccessfulDelete", "Deleted pod: web-"))


async def test_job_events_in_describe(cluster):
    await cluster.client.create(JOBS, job("once"), "default")
    out = await _described(cluster, "job", "once",
                           wanted=("SuccessfulCreate", "Created pod: once-", "Completed",
                                   "Job completed"))
    assert "job-controller" in out
