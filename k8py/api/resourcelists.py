"""ResourceLists (`{"cpu": "500m", "pods": "3"}`) as maps of exact `Quantity`s, and the
arithmetic quota and LimitRange decisions are made of (upstream's quota/v1 helpers and
pkg/api/v1/resource's PodRequests/PodLimits).

Sums keep the format of their left side unless it is zero (Quantity.Add), so what is
printed in refusals and in a quota's status reads as upstream's does: `requests.memory=1536Mi`.
A value that is not a quantity is left out when a list is read: the schema refused those
on the way in, and a status written by hand must not make admission fail with a 500.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from k8py.api.quantity import Quantity

ResourceList = dict[str, Quantity]
ZERO = Quantity(0)


def read(values: Any) -> ResourceList:
    """A ResourceList from an object's JSON (missing or malformed: empty)."""
    if not isinstance(values, Mapping):
        return {}
    result: ResourceList = {}
    for name, value in values.items():
        try:
            result[name] = Quantity.parse(value)
        except (ValueError, TypeError):
            continue
    return result


def written(values: ResourceList) -> dict[str, str]:
    """The JSON of a ResourceList: canonical quantity strings."""
    return {name: str(value) for name, value in values.items()}


def add(a: ResourceList, b: ResourceList) -> ResourceList:
    result = dict(a)
    for name, value in b.items():
        result[name] = result[name] + value if name in result else value
    return result


def subtract_non_negative(a: ResourceList, b: ResourceList) -> ResourceList:
    """a - b per name, never below zero; names only in b are zero."""
    result: ResourceList = {}
    for name, value in a.items():
        difference = value - b[name] if name in b else value
        result[name] = difference if difference.sign() > 0 else ZERO
    for name in b:
        result.setdefault(name, ZERO)
    return result


def mask(values: ResourceList, names: Iterable[str]) -> ResourceList:
    keep = set(names)
    return {name: value for name, value in values.items() if name in keep}


def less_than_or_equal(a: ResourceList, b: ResourceList) -> tuple[bool, list[str]]:
    """Whether every name of b that a has is within b; those that exceed."""
    exceeded = [name for name, limit in b.items() if name in a and a[name] > limit]
    return not exceeded, exceeded


def equals(a: ResourceList, b: ResourceList) -> bool:
    return a.keys() == b.keys() and all(a[name] == b[name] for name in a)


def remove_zeros(values: ResourceList) -> ResourceList:
    return {name: value for name, value in values.items() if value.sign() != 0}


def negative(values: ResourceList) -> list[str]:
    return [name for name, value in values.items() if value.sign() < 0]


def pretty(values: ResourceList) -> str:
    """`name=value,...` sorted by name (the quota admission's prettyPrint)."""
    return ",".join(f"{name}={values[name]}" for name in sorted(values))


def maximum(a: ResourceList, b: ResourceList) -> ResourceList:
    """Per name the greater of a and b (upstream's maxResourceList, into a copy of a)."""
    result = dict(a)
    for name, value in b.items():
        if name not in result or value > result[name]:
            result[name] = value
    return result


# --- a pod's requests and limits --------------------------------------------------------


def _container_values(container: Any, field: str) -> ResourceList:
    resources = container.get("resources") if isinstance(container, Mapping) else None
    return read(resources.get(field)) if isinstance(resources, Mapping) else {}


def _aggregate(spec: Mapping, field: str, containers: list[ResourceList]) -> ResourceList:
    """Containers summed; init containers as their peak (a restartable one, a sidecar,
    runs on beside everything after it, so it adds to the sum and to later peaks)."""
    total: ResourceList = {}
    for values in containers:
        total = add(total, values)
    sidecars: ResourceList = {}
    peak: ResourceList = {}
    for init in spec.get("initContainers") or ():
        values = _container_values(init, field)
        if isinstance(init, Mapping) and init.get("restartPolicy") == "Always":
            total = add(total, values)
            sidecars = add(sidecars, values)
            values = sidecars
        else:
            values = add(values, sidecars)
        peak = maximum(peak, values)
    return maximum(total, peak)


def pod_requests(pod: Mapping, overhead: bool = True,
                 status_resources: bool = True) -> ResourceList:
    """What a pod requests (PodRequests). With `status_resources`, a container whose status
    reports other resources (an in-place resize under way) counts the greater of both."""
    spec = pod.get("spec") or {}
    statuses = {}
    if status_resources:
        for status in (pod.get("status") or {}).get("containerStatuses") or ():
            if isinstance(status, Mapping) and isinstance(status.get("resources"), Mapping):
                statuses[status.get("name")] = read(status["resources"].get("requests"))
    containers = []
    for container in spec.get("containers") or ():
        values = _container_values(container, "requests")
        if isinstance(container, Mapping) and container.get("name") in statuses:
            values = maximum(values, statuses[container["name"]])
        containers.append(values)
    result = _aggregate(spec, "requests", containers)
    if overhead:
        result = add(result, read(spec.get("overhead")))
    return result


def pod_limits(pod: Mapping, overhead: bool = True) -> ResourceList:
    """What a pod limits (PodLimits): overhead adds only to resources that are limited."""
    spec = pod.get("spec") or {}
    containers = [_container_values(c, "limits") for c in spec.get("containers") or ()]
    result = _aggregate(spec, "limits", containers)
    if overhead:
        for name, value in read(spec.get("overhead")).items():
            if name in result:
                result[name] = result[name] + value
    return result
