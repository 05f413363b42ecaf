"""The replica calculator on in-memory pod metrics: cases after upstream's
replica_calculator_test.go (same pods, requests, usage and expected answers)."""

from __future__ import annotations

import datetime

import pytest

from k8py.api import errors
from k8py.server.controllers.replicacalculator import MetricsError, ReplicaCalculator

NOW = 1_800_000_000.0


def _time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


class Source:
    """PodMetrics as the metrics API lists them; `error` makes the list fail."""

    def __init__(self, usage: dict[str, str | None], resource: str = "cpu",
                 error: errors.StatusError | None = None, sampled: float = NOW):
        self.usage, self.resource, self.error, self.sampled = usage, resource, error, sampled

    async def list(self, namespace, selector):
        if self.error is not None:
            raise self.error
        return [{"metadata": {"name": name, "namespace": namespace},
                 "timestamp": _time(self.sampled), "window": "30s",
                 "containers": [{"name": "app", "usage":
                                 {} if value is None else {self.resource: value}}]}
                for name, value in self.usage.items()]


def pod(name: str, request: str | None = "1", resource: str = "cpu", ready: bool = True,
        phase: str = "Running", started: float = NOW - 3600,
        transition: float = NOW - 3000, deleted: bool = False) -> dict:
    requests = {} if request is None else {resource: request}
    metadata = {"name": name, "namespace": "ns", "labels": {"app": "x"}}
    if deleted:
        metadata["deletionTimestamp"] = _time(NOW)
    return {"metadata": metadata,
            "spec": {"containers": [{"name": "app", "resources": {"requests": requests}}]},
            "status": {"phase": phase, "startTime": _time(started), "conditions": [
                {"type": "Ready", "status": "True" if ready else "False",
                 "lastTransitionTime": _time(transition)}]}}


def calculator(source) -> ReplicaCalculator:
    return ReplicaCalculator(source, clock=lambda: NOW)


async def test_scale_up():
    pods = [pod("a"), pod("b"), pod("c")]
    found = await calculator(Source({"a": "300m", "b": "500m", "c": "700m"})) \
        .utilization_replicas(3, 30, "cpu", "ns", "app=x", pods)
    assert (found.replicas, found.utilization, found.average) == (5, 50, 500)


async def test_scale_up_unready_less_scale():
    pods = [pod("a", ready=False, started=NOW - 60, transition=NOW - 50), pod("b"), pod("c")]
    found = await calculator(Source({"a": "300m", "b": "500m", "c": "700m"})) \
        .utilization_replicas(3, 30, "cpu", "ns", "app=x", pods)
    assert (found.replicas, found.utilization) == (4, 60)


async def test_scale_up_unready_no_scale():
    pods = [pod("a"), pod("b", ready=False, started=NOW - 60, transition=NOW - 50),
            pod("c", ready=False, started=NOW - 60, transition=NOW - 50)]
    found = await calculator(Source({"a": "400m", "b": "500m", "c": "700m"})) \
        .utilization_replicas(3, 30, "cpu", "ns", "app=x", pods)
    assert (found.replicas, found.utilization) == (3, 40)


async def test_scale_up_ignores_failed_and_deleted_pods():
    pods = [pod("a"), pod("b"), pod("c", phase="Failed"), pod("d", deleted=True)]
    found = await calculator(Source({"a": "500m", "b": "700m", "c": "100m", "d": "100m"})) \
        .utilization_replicas(4, 30, "cpu", "ns", "app=x", pods)
    assert (found.replicas, found.utilization) == (4, 60)


async def test_scale_up_pending_pod_counts_as_zero():
    pods = [pod("a"), pod("b"), pod("c", phase="Pending")]
    found = await calculator(Source({"a": "300m", "b": "500m"})) \
        .utilization_replicas(3, 30, "cpu", "ns", "app=x", pods)
    # 40% on the ready pods; with the pending one at 0: 800/3000 = 26% -> ceil(0.888 * 3)
    assert (found.replicas, found.utilization) == (3, 40)


async def test_cpu_sample_from_before_readiness_is_ignored_while_initializing():
    pods = [pod("a", started=NOW - 60, transition=NOW - 10), pod("b"), pod("c")]
    found = await calculator(Source({"a": "900m", "b": "500m", "c": "700m"})) \
        .utilization_replicas(3, 30, "cpu", "ns", "app=x", pods)
    assert (found.replicas, found.utilization) == (4, 60)


async def test_memory_ignores_readiness():
    pods = [pod(n, request="1Gi", resource="memory", ready=False, started=NOW - 60,
                transition=NOW - 50) for n in "abc"]
    found = await calculator(Source({"a": "512Mi", "b": "512Mi", "c": "1Gi"}, "memory")) \
        .utilization_replicas(3, 50, "memory", "ns", "app=x", pods)
    assert (found.replicas, found.utilization) == (4, 66)


async def test_scale_down():
    pods = [pod(n) for n in "abcde"]
    usage = dict(zip("abcde", ["100m", "300m", "500m", "250m", "250m"]))
    found = await calculator(Source(usage)).utilization_replicas(5, 50, "cpu", "ns", "app=x",
                                                                 pods)
    assert (found.replicas, found.utilization) == (3, 28)


async def test_scale_down_missing_metrics_count_as_full_request():
    pods = [pod(n) for n in "abcd"]
    found = await calculator(Source({"a": "100m", "b": "100m", "c": "100m"})) \
        .utilization_replicas(4, 50, "cpu", "ns", "app=x", pods)
    # 10% without d; with d at 100%: 1300/4000 = 32.5% -> ceil(0.65 * 4)
    assert (found.replicas, found.utilization) == (3, 10)


async def test_scale_up_missing_metrics_count_as_zero():
    pods = [pod(n) for n in "abcd"]
    found = await calculator(Source({"a": "900m", "b": "900m"})) \
        .utilization_replicas(4, 50, "cpu", "ns", "app=x", pods)
    # 90%; with c and d at 0: 1800/4000 = 45% turns the direction: no change
    assert (found.replicas, found.utilization) == (4, 90)


async def test_within_tolerance():
    pods = [pod("a", "900m"), pod("b", "1"), pod("c", "1100m")]
    found = await calculator(Source({"a": "1010m", "b": "1030m", "c": "1020m"})) \
        .utilization_replicas(3, 100, "cpu", "ns", "app=x", pods)
    assert (found.replicas, found.utilization) == (3, 102)


async def test_average_value_target():
    pods = [pod(n, request=None, resource="memory") for n in "abc"]
    found = await calculator(Source({"a": "200Mi", "b": "300Mi", "c": "400Mi"}, "memory")) \
        .average_value_replicas(3, 150 * 2 ** 20 * 1000, "memory", "ns", "app=x", pods)
    assert found.replicas == 6 and found.average == 300 * 2 ** 20 * 1000


async def test_container_resource():
    pods = [pod("a"), pod("b")]
    found = await calculator(Source({"a": "800m", "b": "800m"})) \
        .utilization_replicas(2, 40, "cpu", "ns", "app=x", pods, container="app")
    assert (found.replicas, found.utilization) == (4, 80)
    with pytest.raises(MetricsError, match="container sidecar not present in metrics for "
                                           "pod ns/a"):
        await calculator(Source({"a": "800m"})).utilization_replicas(
            2, 40, "cpu", "ns", "app=x", pods, container="sidecar")


async def test_errors():
    pods = [pod("a")]
    with pytest.raises(MetricsError) as raised:
        await calculator(Source({})).utilization_replicas(1, 50, "cpu", "ns", "app=x", pods)
    assert str(raised.value) == ("unable to get metrics for resource cpu: no metrics returned "
                                 "from resource metrics API")
    with pytest.raises(MetricsError) as raised:
        await calculator(Source({}, error=errors.NotFound("the server could not find the "
                                                          "requested resource"))) \
            .utilization_replicas(1, 50, "cpu", "ns", "app=x", pods)
    assert str(raised.value) == (
        "unable to get metrics for resource cpu: unable to fetch metrics from resource metrics "
        "API: the server could not find the requested resource (get pods.metrics.k8s.io)")
    with pytest.raises(MetricsError, match="^missing request for cpu in container app of Pod a$"):
        await calculator(Source({"a": "1"})).utilization_replicas(
            1, 50, "cpu", "ns", "app=x", [pod("a", request=None)])
    with pytest.raises(MetricsError, match="no pods returned by selector"):
        await calculator(Source({"a": "1"})).utilization_replicas(1, 50, "cpu", "ns", "app=x",
                                                                  [])
    with pytest.raises(MetricsError, match=r"did not receive metrics for targeted pods"):
        await calculator(Source({"a": "1"})).utilization_replicas(
            1, 50, "cpu", "ns", "app=x", [pod("a", phase="Pending")])
