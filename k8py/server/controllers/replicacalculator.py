"""How many replicas a resource metric asks for: upstream's replica calculator
(pkg/controller/podautoscaler/replica_calculator.go) and its resource metrics client.

Pod usage comes from a `PodMetricsSource`; `ResourceMetricsAPI` lists `metrics.k8s.io/v1beta1`
PodMetrics (the metrics-server's API) through the controller's client. Tests give the
calculator an in-memory source, as upstream's tests give it fake clients.

The arithmetic, for the pods the target's selector matches (from the pod cache):
- values are milli-units (`MilliValue`); a pod's value sums its containers (or the one named
  container for a ContainerResource metric); a pod whose metrics lack the resource has none;
- pods being deleted or Failed are ignored; Pending pods are unready; for cpu, a pod is also
  unready while it has no Ready condition or start time, or within the cpu initialization
  period if it is not Ready or its sample predates its last readiness change plus the
  sample's window, or after it if it is not Ready and has never been (its readiness changed
  within the initial readiness delay of its start); pods without metrics are missing;
- utilization is sum(usage) * 100 / sum(requests) (integer), the usage ratio is utilization /
  target; within the tolerance (|1 - ratio| <= 0.1) nothing changes, and without unready or
  missing pods the answer is ceil(ratio * ready pods);
- otherwise missing pods count as 100% of their request on a scale-down and 0% on a scale-up,
  unready pods as 0% on a scale-up, the ratio is computed again, and a result inside the
  tolerance or turning the direction of the scale keeps the current count.
An AverageValue target does the same on the mean usage per pod instead of utilization.
Errors carry upstream's messages, which end up in the HPA's conditions and Events.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from k8py.api import errors, timestamps
from k8py.api.quantity import Quantity
from k8py.api.resources import Resource
from k8py.client.client import Client

POD_METRICS = Resource("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", True,
                       verbs=("get", "list"))


class MetricsError(Exception):
    """The replica count could not be computed; str() is upstream's message."""


@dataclasses.dataclass
class PodMetric:
    value: int          # milli-units
    timestamp: float    # seconds since the epoch
    window: float       # seconds


class PodMetricsSource(Protocol):
    async def list(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The PodMetrics objects of the namespace's pods that `selector` matches; raises
        `errors.StatusError` when the metrics API fails."""


class ResourceMetricsAPI:
    """PodMetrics listed from the `metrics.k8s.io/v1beta1` API through a client."""

    def __init__(self, client: Client):
        self.client = client

    async def list(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        answer = await self.client.list(POD_METRICS, namespace, label_selector=selector)
        return answer.get("items") or []


def _error_text(exc: errors.StatusError) -> str:
    if isinstance(exc, errors.NotFound):  # the API is not there: client-go's wording
        return "the server could not find the requested resource (get pods.metrics.k8s.io)"
    return exc.message


async def resource_metrics(source: PodMetricsSource, resource: str, namespace: str,
                           selector: str, container: str = "") -> tuple[dict[str, PodMetric],
                                                                        float]:
    """Per pod, the usage of `resource` (of one container if given), and the first sample's
    time (upstream's resourceMetricsClient.GetResourceMetric)."""
    try:
        items = await source.list(namespace, selector)
    except errors.StatusError as exc:
        raise MetricsError("unable to fetch metrics from resource metrics API: "
                           + _error_text(exc)) from exc
    if not items:
        raise MetricsError("no metrics returned from resource metrics API")
    metrics: dict[str, PodMetric] = {}
    for item in items:
        name = item["metadata"]["name"]
        when = timestamps.parse(item.get("timestamp")) or 0.0
        window = _seconds(item.get("window"))
        containers = item.get("containers") or []
        if container:
            found = next((c for c in containers if c.get("name") == container), None)
            if found is None:
                raise MetricsError(
                    f"failed to get container metrics: container {container} not present in "
                    f"metrics for pod {item['metadata'].get('namespace', namespace)}/{name}")
            usage = (found.get("usage") or {}).get(resource)
            if usage is not None:
                metrics[name] = PodMetric(Quantity.parse(usage).milli(), when, window)
            continue
        total = 0
        for entry in containers:
            usage = (entry.get("usage") or {}).get(resource)
            if usage is None:
                break
            total += Quantity.parse(usage).milli()
        else:
            metrics[name] = PodMetric(total, when, window)
    return metrics, timestamps.parse(items[0].get("timestamp")) or 0.0


def _seconds(duration: Any) -> float:
    """A metav1.Duration as metrics-server writes it (`15s`, `1m0s`, `10.5s`)."""
    if not isinstance(duration, str) or not duration:
        return 0.0
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    index = 0
    while index < len(duration):
        char = duration[index]
        if char.isdigit() or char == ".":
            number += char
            index += 1
            continue
        unit = "ms" if duration.startswith("ms", index) else char
        index += len(unit)
        try:
            total += float(number) * units.get(unit, 0.0)
        except ValueError:
            return 0.0
        number = ""
    return total


@dataclasses.dataclass
class Recommendation:
    replicas: int
    utilization: int | None   # percent of request (utilization targets)
    average: int              # milli-units per pod
    timestamp: float


class ReplicaCalculator:
    def __init__(self, source: PodMetricsSource, tolerance: float = 0.1,
                 cpu_initialization_period: float = 300.0,
                 initial_readiness_delay: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self.source = source
        self.tolerance = tolerance
        self.cpu_initialization_period = cpu_initialization_period
        self.initial_readiness_delay = initial_readiness_delay
        self.clock = clock

    async def utilization_replicas(self, current: int, target: int, resource: str,
                                   namespace: str, selector: str, pods: list[dict[str, Any]],
                                   container: str = "") -> Recommendation:
        """GetResourceReplicas: against a target utilization (percent of request)."""
        metrics, when, ready, unready, missing, requests = await self._observe(
            resource, namespace, selector, pods, container, with_requests=True)
        ratio, utilization, average = utilization_ratio(metrics, requests, target)
        rebalance_unready = bool(unready) and ratio > 1.0
        if not rebalance_unready and not missing:
            if abs(1.0 - ratio) <= self.tolerance:
                return Recommendation(current, utilization, average, when)
            return Recommendation(math.ceil(ratio * ready), utilization, average, when)
        if missing:
            for name in missing:
                if ratio < 1.0:   # a scale-down: missing pods at 100% of their request
                    metrics[name] = PodMetric(requests.get(name, 0), 0.0, 0.0)
                elif ratio > 1.0:  # a scale-up: at 0%
                    metrics[name] = PodMetric(0, 0.0, 0.0)
        if rebalance_unready:
            for name in unready:
                metrics[name] = PodMetric(0, 0.0, 0.0)
        new_ratio, _, _ = utilization_ratio(metrics, requests, target)
        if self._keeps(ratio, new_ratio):
            return Recommendation(current, utilization, average, when)
        replicas = math.ceil(new_ratio * len(metrics))
        if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
            return Recommendation(current, utilization, average, when)
        return Recommendation(replicas, utilization, average, when)

    async def average_value_replicas(self, current: int, target: int, resource: str,
                                     namespace: str, selector: str,
                                     pods: list[dict[str, Any]],
                                     container: str = "") -> Recommendation:
        """GetRawResourceReplicas: against a target mean usage per pod (milli-units)."""
        metrics, when, ready, unready, missing, _ = await self._observe(
            resource, namespace, selector, pods, container)
        ratio, average = usage_ratio(metrics, target)
        rebalance_unready = bool(unready) and ratio > 1.0
        if not rebalance_unready and not missing:
            if abs(1.0 - ratio) <= self.tolerance:
                return Recommendation(current, None, average, when)
            return Recommendation(math.ceil(ratio * ready), None, average, when)
        for name in missing:
            metrics[name] = PodMetric(target if ratio < 1.0 else 0, 0.0, 0.0)
        if rebalance_unready:
            for name in unready:
                metrics[name] = PodMetric(0, 0.0, 0.0)
        new_ratio, _ = usage_ratio(metrics, target)
        if self._keeps(ratio, new_ratio):
            return Recommendation(current, None, average, when)
        return Recommendation(math.ceil(new_ratio * len(metrics)), None, average, when)

    async def _observe(self, resource: str, namespace: str, selector: str,
                       pods: list[dict[str, Any]], container: str, with_requests: bool = False
                       ) -> tuple[dict[str, PodMetric], Any, int, set[str], set[str],
                                  dict[str, int] | None]:
        """The pods' metrics less the unready and ignored pods', with when they were taken,
        the ready count, the unready and missing pods and (if asked) their requests;
        upstream's errors, in upstream's order, when there is nothing to compute with."""
        try:
            metrics, when = await resource_metrics(self.source, resource, namespace, selector,
                                                   container)
        except MetricsError as exc:
            raise MetricsError(f"unable to get metrics for resource {resource}: {exc}") from exc
        if not pods:
            raise MetricsError("no pods returned by selector while calculating replica count")
        ready, unready, missing, ignored = self.group_pods(pods, metrics, resource)
        for name in unready | ignored:
            metrics.pop(name, None)
        requests = pod_requests(pods, resource, container) if with_requests else None
        if not metrics:
            raise MetricsError("did not receive metrics for targeted pods "
                               "(pods might be unready)")
        return metrics, when, ready, unready, missing, requests

    def _keeps(self, ratio: float, new_ratio: float) -> bool:
        """Too small a change, or one that turns the direction of the scale."""
        return abs(1.0 - new_ratio) <= self.tolerance or (ratio < 1.0 < new_ratio) or \
            (ratio > 1.0 > new_ratio)

    def group_pods(self, pods: Iterable[dict[str, Any]], metrics: dict[str, PodMetric],
                   resource: str) -> tuple[int, set[str], set[str], set[str]]:
        """(ready count, unready, missing, ignored) as upstream's groupPods."""
        ready, unready, missing, ignored = 0, set(), set(), set()
        now = self.clock()
        for pod in pods:
            name = pod["metadata"]["name"]
            status = pod.get("status") or {}
            phase = status.get("phase")
            if pod["metadata"].get("deletionTimestamp") or phase == "Failed":
                ignored.add(name)
                continue
            if phase == "Pending":
                unready.add(name)
                continue
            metric = metrics.get(name)
            if metric is None:
                missing.add(name)
                continue
            if resource == "cpu" and self._cpu_unready(status, metric, now):
                unready.add(name)
                continue
            ready += 1
        return ready, unready, missing, ignored

    def _cpu_unready(self, status: dict[str, Any], metric: PodMetric, now: float) -> bool:
        condition = next((c for c in status.get("conditions") or ()
                          if c.get("type") == "Ready"), None)
        started = timestamps.parse(status.get("startTime"))
        if condition is None or started is None:
            return True
        transition = timestamps.parse(condition.get("lastTransitionTime")) or 0.0
        if started + self.cpu_initialization_period > now:
            # still initializing: a sample taken before one window after it became ready
            # may include its start-up burst
            return condition.get("status") == "False" or \
                metric.timestamp < transition + metric.window
        # unready and never ready since it started
        return condition.get("status") == "False" and \
            started + self.initial_readiness_delay > transition


def pod_requests(pods: Iterable[dict[str, Any]], resource: str,
                 container: str = "") -> dict[str, int]:
    """Per pod, the summed request (milli-units) of its containers and restartable init
    containers (or of the named one); MetricsError naming a container without one."""
    requests = {}
    for pod in pods:
        spec = pod.get("spec") or {}
        containers = list(spec.get("containers") or []) + [
            c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
        total = 0
        for entry in containers:
            if container and entry.get("name") != container:
                continue
            request = ((entry.get("resources") or {}).get("requests") or {}).get(resource)
            if request is None:
                raise MetricsError(f"missing request for {resource} in container "
                                   f"{entry.get('name')} of Pod {pod['metadata']['name']}")
            total += Quantity.parse(request).milli()
        requests[pod["metadata"]["name"]] = total
    return requests


def utilization_ratio(metrics: dict[str, PodMetric], requests: dict[str, int],
                      target: int) -> tuple[float, int, int]:
    """(usage ratio, utilization percent, mean usage) over the pods with a request
    (GetResourceUtilizationRatio)."""
    usage = requested = counted = 0
    for name, metric in metrics.items():
        if name not in requests:  # metrics of pods the selector no longer matches
            continue
        usage += metric.value
        requested += requests[name]
        counted += 1
    if requested == 0:
        raise MetricsError("no metrics returned matched known pods")
    utilization = usage * 100 // requested
    return utilization / target, utilization, usage // counted


def usage_ratio(metrics: dict[str, PodMetric], target: int) -> tuple[float, int]:
    """(usage ratio, mean usage) (GetMetricUsageRatio)."""
    average = sum(m.value for m in metrics.values()) // len(metrics)
    return average / target, average
