"""HorizontalPodAutoscalers served as upstream serves them: autoscaling/v2 (stored and
preferred) and autoscaling/v1 over the same objects, converted both ways, with the official
Python client's typed APIs and `kubectl autoscale`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from k8py.server import pki
from tests.e2e.conftest import find_kubectl


@pytest.fixture
def kubeconfig(server, tmp_path):
    path = str(tmp_path / "kubeconfig.yaml")
    pki.write_kubeconfig(server.certs, path, server.url, 0o600)
    return path


@pytest.fixture
def api_client(kubeconfig):
    return config.new_client_from_config(config_file=kubeconfig)


def run(fn, *args, **kwargs):
    return asyncio.to_thread(fn, *args, **kwargs)


def v2_hpa(name, metrics=None, behavior=None):
    return client.V2HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name="web"),
            max_replicas=5, metrics=metrics, behavior=behavior))


async def test_v1_create_reads_back_in_both_versions(api_client):
    v1 = client.AutoscalingV1Api(api_client)
    v2 = client.AutoscalingV2Api(api_client)
    created = await run(v1.create_namespaced_horizontal_pod_autoscaler, "default",
                        client.V1HorizontalPodAutoscaler(
                            metadata=client.V1ObjectMeta(name="web"),
                            spec=client.V1HorizontalPodAutoscalerSpec(
                                scale_target_ref=client.V1CrossVersionObjectReference(
                                    api_version="apps/v1", kind="Deployment", name="web"),
                                max_replicas=4, target_cpu_utilization_percentage=50)))
    assert created.spec.min_replicas == 1
    assert created.spec.target_cpu_utilization_percentage == 50
    assert created.status.current_replicas == 0 and created.status.desired_replicas == 0
    as_v2 = await run(v2.read_namespaced_horizontal_pod_autoscaler, "web", "default")
    assert as_v2.api_version == "autoscaling/v2"
    [metric] = as_v2.spec.metrics
    assert metric.type == "Resource" and metric.resource.name == "cpu"
    assert metric.resource.target.type == "Utilization"
    assert metric.resource.target.average_utilization == 50
    assert as_v2.metadata.resource_version == created.metadata.resource_version


async def test_v1_without_a_target_gets_the_default_cpu_target(api_client):
    v1 = client.AutoscalingV1Api(api_client)
    created = await run(v1.create_namespaced_horizontal_pod_autoscaler, "default",
                        client.V1HorizontalPodAutoscaler(
                            metadata=client.V1ObjectMeta(name="plain"),
                            spec=client.V1HorizontalPodAutoscalerSpec(
                                scale_target_ref=client.V1CrossVersionObjectReference(
                                    kind="Deployment", name="web"), max_replicas=3)))
    # upstream's v1 -> v2 conversion puts in the CPU target v1 used to imply
    assert created.spec.target_cpu_utilization_percentage == 80


async def test_v2_metrics_survive_a_round_trip_through_v1(api_client):
    v1 = client.AutoscalingV1Api(api_client)
    v2 = client.AutoscalingV2Api(api_client)
    memory = client.V2MetricSpec(type="Resource", resource=client.V2ResourceMetricSource(
        name="memory", target=client.V2MetricTarget(type="AverageValue",
                                                    average_value="100Mi")))
    cpu = client.V2MetricSpec(type="Resource", resource=client.V2ResourceMetricSource(
        name="cpu", target=client.V2MetricTarget(type="Utilization", average_utilization=60)))
    behavior = client.V2HorizontalPodAutoscalerBehavior(
        scale_down=client.V2HPAScalingRules(stabilization_window_seconds=30))
    created = await run(v2.create_namespaced_horizontal_pod_autoscaler, "default",
                        v2_hpa("mixed", [memory, cpu], behavior))
    assert created.status.desired_replicas == 0
    # the behavior's unset rules are filled in, as upstream's v2 defaults do
    assert created.spec.behavior.scale_up.select_policy == "Max"
    assert [p.type for p in created.spec.behavior.scale_up.policies] == ["Pods", "Percent"]
    assert created.spec.behavior.scale_down.stabilization_window_seconds == 30

    old = await run(v1.read_namespaced_horizontal_pod_autoscaler, "mixed", "default")
    assert old.spec.target_cpu_utilization_percentage == 60
    kept = json.loads(old.metadata.annotations["autoscaling.alpha.kubernetes.io/metrics"])
    assert kept == [{"type": "Resource", "resource": {"name": "memory",
                                                      "targetAverageValue": "100Mi"}}]
    # an update through v1 keeps what only v2 can say
    old.spec.max_replicas = 7
    await run(v1.replace_namespaced_horizontal_pod_autoscaler, "mixed", "default", old)
    again = await run(v2.read_namespaced_horizontal_pod_autoscaler, "mixed", "default")
    assert again.spec.max_replicas == 7
    assert {m.resource.name for m in again.spec.metrics} == {"memory", "cpu"}
    assert again.spec.behavior.scale_down.stabilization_window_seconds == 30
    assert not (again.metadata.annotations or {})


async def test_lists_and_watches_convert(api_client):
    v1 = client.AutoscalingV1Api(api_client)
    v2 = client.AutoscalingV2Api(api_client)
    await run(v2.create_namespaced_horizontal_pod_autoscaler, "default", v2_hpa("listed"))
    listed = await run(v1.list_namespaced_horizontal_pod_autoscaler, "default")
    assert [i.api_version for i in listed.items] == ["autoscaling/v1"]
    assert listed.items[0].spec.target_cpu_utilization_percentage == 80
    both = await run(v2.list_horizontal_pod_autoscaler_for_all_namespaces)
    assert both.items[0].spec.metrics[0].resource.target.average_utilization == 80

    def first_event():
        from kubernetes import watch
        stream = watch.Watch().stream(v1.list_namespaced_horizontal_pod_autoscaler,
                                      "default", timeout_seconds=5)
        for event in stream:
            return event

    event = await run(first_event)
    assert event["type"] == "ADDED"
    assert event["object"].spec.target_cpu_utilization_percentage == 80


async def test_invalid_bounds_are_refused(api_client):
    v2 = client.AutoscalingV2Api(api_client)
    bad = v2_hpa("bad")
    bad.spec.min_replicas = 6
    with pytest.raises(ApiException) as caught:
        await run(v2.create_namespaced_horizontal_pod_autoscaler, "default", bad)
    assert caught.value.status == 422
    body = json.loads(caught.value.body)
    assert body["details"]["causes"][0]["field"] == "spec.maxReplicas"
    assert "must be greater than or equal to `minReplicas`" in body["message"]


async def test_discovery_prefers_v2(api_client):
    groups = await run(client.ApisApi(api_client).get_api_versions)
    [autoscaling] = [g for g in groups.groups if g.name == "autoscaling"]
    assert autoscaling.preferred_version.version == "v2"
    assert [v.version for v in autoscaling.versions] == ["v2", "v1"]


def kubectl(kubeconfig, *args):
    return subprocess.run([find_kubectl(), "--kubeconfig", kubeconfig, *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": kubeconfig})


async def test_kubectl_autoscale_and_get_hpa(kubeconfig, api_client):
    apps = client.AppsV1Api(api_client)
    await run(apps.create_namespaced_deployment, "default", client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c",
                                                                     image="nginx")])))))
    made = await run(kubectl, kubeconfig, "autoscale", "deployment", "web", "--min=2",
                     "--max=6", "--cpu-percent=70")
    assert made.returncode == 0, made.stderr
    assert "horizontalpodautoscaler.autoscaling/web autoscaled" in made.stdout
    shown = await run(kubectl, kubeconfig, "get", "hpa", "web")
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()
    assert header.split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS",
                              "REPLICAS", "AGE"]
    assert row.split()[:7] == ["web", "Deployment/web", "cpu:", "<unknown>/70%", "2", "6",
                               "0"]
    described = await run(kubectl, kubeconfig, "describe", "hpa", "web")
    assert described.returncode == 0, described.stderr
    assert "Deployment/web" in described.stdout
    deleted = await run(kubectl, kubeconfig, "delete", "hpa", "web")
    assert deleted.returncode == 0, deleted.stderr
