"""The HorizontalPodAutoscaler controller in a control plane: without a metrics API it says
so as upstream does (ScalingActive=False FailedGetResourceMetric, Events); with pod metrics
(an injected source that answers PodMetrics for the pods, as metrics-server would) it scales
the Deployment through its scale subresource and reports why."""

from __future__ import annotations

import dataclasses

from k8py.api.resources import builtin
from k8py.server.controllers.base import Settings
from tests.conftest import eventually
from tests.integration.controllers.conftest import start_control_plane

DEPLOYMENTS = builtin("apps/v1", "deployments")
HPAS = builtin("autoscaling/v2", "horizontalpodautoscalers")
PODS = builtin("v1", "pods")
EVENTS = builtin("v1", "events")


def deployment(replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "containers": [{"name": "c", "image": "web:1", "resources": {
                             "requests": {"cpu": "100m"}}}]}}}}


def autoscaler(max_replicas: int = 5) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web"},
                     "minReplicas": 1, "maxReplicas": max_replicas,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization",
                                                   "averageUtilization": 50}}}]}}


def condition(hpa: dict, kind: str) -> dict:
    return next((c for c in (hpa.get("status") or {}).get("conditions") or []
                 if c["type"] == kind), {})


async def events(client, reason: str) -> list[dict]:
    listed = await client.list(EVENTS, "default",
                               field_selector="involvedObject.kind=HorizontalPodAutoscaler")
    found = [e for e in listed["items"] if e["reason"] == reason]
    return found or None


async def test_without_metrics_api(cluster):
    client = cluster.client
    await client.create(DEPLOYMENTS, deployment(2))
    await client.create(HPAS, autoscaler())

    async def inactive():
        hpa = await client.get(HPAS, "web", "default")
        active = condition(hpa, "ScalingActive")
        return hpa if active.get("reason") == "FailedGetResourceMetric" else None

    hpa = await eventually(inactive, 10, what="ScalingActive=False")
    assert condition(hpa, "AbleToScale")["reason"] == "SucceededGetScale"
    # the test control plane serves no metrics.k8s.io: upstream's words for a missing API
    message = "unable to get metrics for resource cpu: unable to fetch metrics from resource " \
        "metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)"
    active = condition(hpa, "ScalingActive")
    assert active["status"] == "False"
    assert active["message"].startswith("the HPA was unable to compute the replica count: "
                                        "failed to get cpu utilization: " + message)
    assert hpa["status"]["currentReplicas"] == 2
    failed = await eventually(lambda: events(client, "FailedComputeMetricsReplicas"), 5,
                              what="FailedComputeMetricsReplicas")
    assert failed[0]["type"] == "Warning"
    assert failed[0]["message"].startswith(
        "invalid metrics (1 invalid out of 1), first error is: failed to get cpu resource "
        "metric value: failed to get cpu utilization: " + message)
    assert failed[0]["source"]["component"] == "horizontal-pod-autoscaler"
    assert await events(client, "FailedGetResourceMetric")
    assert (await client.get(DEPLOYMENTS, "web", "default"))["spec"]["replicas"] == 2


class BusyPods:
    """Every pod of the selector at 200m cpu (200% of its request), as PodMetrics."""

    def __init__(self, client):
        self.client = client

    async def list(self, namespace, selector):
        pods = await self.client.list(PODS, namespace, label_selector=selector)
        return [{"metadata": {"name": p["metadata"]["name"], "namespace": namespace},
                 "timestamp": "2030-01-01T00:00:00Z", "window": "15s",
                 "containers": [{"name": "c", "usage": {"cpu": "200m"}}]}
                for p in pods["items"]]


async def test_scales_on_cpu_utilization(tmp_path):
    settings = dataclasses.replace(Settings(), hpa_sync_period=1.0,
                                   hpa_metrics_source=BusyPods)
    async with start_control_plane(tmp_path, settings=settings) as cluster:
        client = cluster.client
        await client.create(DEPLOYMENTS, deployment(2))

        async def running():
            pods = (await client.list(PODS, "default", label_selector="app=web"))["items"]
            return len([p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                        ]) == 2 or None

        await eventually(running, 10, what="2 running pods")
        await client.create(HPAS, autoscaler(max_replicas=5))
        rescaled = await eventually(lambda: events(client, "SuccessfulRescale"), 10,
                                    what="SuccessfulRescale")
        # 200% of a 50% target: 8 wanted, at most doubled (4) on one step
        assert rescaled[0]["message"] == ("New size: 4; reason: cpu resource utilization "
                                          "(percentage of request) above target")
        assert (await client.get(DEPLOYMENTS, "web", "default"))["spec"]["replicas"] >= 4

        async def at_max():
            hpa = await client.get(HPAS, "web", "default")
            return hpa if (hpa.get("status") or {}).get("desiredReplicas") == 5 and \
                condition(hpa, "ScalingLimited").get("reason") == "TooManyReplicas" else None

        hpa = await eventually(at_max, 15, what="scaled to maxReplicas")
        status = hpa["status"]
        assert condition(hpa, "ScalingActive") == {**condition(hpa, "ScalingActive"),
                                                   "status": "True",
                                                   "reason": "ValidMetricFound"}
        assert status["currentMetrics"] == [{"type": "Resource", "resource": {
            "name": "cpu", "current": {"averageUtilization": 200, "averageValue": "200m"}}}]
        assert status["lastScaleTime"]
