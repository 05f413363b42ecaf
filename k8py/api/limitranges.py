"""LimitRange arithmetic, pure (upstream's LimitRanger admission plugin and the LimitRange
defaulting of pkg/apis/core/v1).

- `default_limit_range`: a Container item's `default` falls back to its `max`, its
  `defaultRequest` to `default`, then to `min` (what a stored LimitRange shows).
- `apply_container_defaults`: containers and init containers missing a request or a limit
  get the Container items' defaultRequest/default; the pod is annotated
  `kubernetes.io/limit-ranger: LimitRanger plugin set: cpu, memory request for container x;
  cpu limit for container x` (one LimitRange's annotation replaces an earlier one's).
- `pod_violations` / `claim_violations`: min, max and maxLimitRequestRatio per Container
  (each container and init container), per Pod (the pod's summed requests and limits, init
  containers as their peak) and per PersistentVolumeClaim (storage requests only), with
  upstream's messages. `aggregate` joins them as utilerrors.NewAggregate does: one message
  alone, several as `[a, b]`, repeats dropped.
Comparisons are in thousandths rounded up (MilliValue), or in whole units (Value) when a
value is too large for thousandths, as upstream compares them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from k8py.api import resourcelists
from k8py.api.quantity import Quantity
from k8py.api.resourcelists import ResourceList

Obj = dict[str, Any]
ANNOTATION = "kubernetes.io/limit-ranger"
CONTAINER, POD, CLAIM = "Container", "Pod", "PersistentVolumeClaim"
_MAX_MILLI = (2 ** 63 - 1) // 1000
_ABSENT = Quantity(0)


def _items(limit_range: Mapping) -> list[Mapping]:
    limits = (limit_range.get("spec") or {}).get("limits") or []
    return [item for item in limits if isinstance(item, Mapping)]


def default_limit_range(obj: Obj) -> Obj:
    """SetDefaults_LimitRangeItem on every Container item of `obj` (changed in place)."""
    for item in (obj.get("spec") or {}).get("limits") or []:
        if not isinstance(item, dict) or item.get("type") != CONTAINER:
            continue
        default = dict(_mapping(item.get("default")))
        request = dict(_mapping(item.get("defaultRequest")))
        for source, target in ((item.get("max"), default), (default, request),
                               (item.get("min"), request)):
            for name, value in _mapping(source).items():
                target.setdefault(name, value)
        for field, values in (("default", default), ("defaultRequest", request)):
            if values:  # an empty map is omitted, as Go's omitempty writes it
                item[field] = values
    return obj


# --- defaults -----------------------------------------------------------------------------


def container_defaults(limit_range: Mapping) -> tuple[ResourceList, ResourceList]:
    """(requests, limits) a container without its own gets (later items win, as upstream)."""
    requests: ResourceList = {}
    limits: ResourceList = {}
    for item in _items(limit_range):
        if item.get("type") == CONTAINER:
            requests.update(resourcelists.read(item.get("defaultRequest")))
            limits.update(resourcelists.read(item.get("default")))
    return requests, limits


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _merge(container: Obj, requests: ResourceList, limits: ResourceList, what: str) -> list[str]:
    resources = container.get("resources")
    resources = dict(resources) if isinstance(resources, Mapping) else {}
    own_limits = dict(_mapping(resources.get("limits")))
    own_requests = dict(_mapping(resources.get("requests")))
    # upstream's defaulting has made a limit without a request request it by now
    for name, value in own_limits.items():
        own_requests.setdefault(name, value)
    set_limits = sorted(name for name in limits if name not in own_limits)
    set_requests = sorted(name for name in requests if name not in own_requests)
    for name in set_limits:
        own_limits[name] = str(limits[name])
    for name in set_requests:
        own_requests[name] = str(requests[name])
    if own_limits:
        resources["limits"] = own_limits
    if own_requests:
        resources["requests"] = own_requests
    container["resources"] = resources
    notes = []
    if set_requests:
        notes.append(f"{', '.join(set_requests)} request for {what} {container.get('name', '')}")
    if set_limits:
        notes.append(f"{', '.join(set_limits)} limit for {what} {container.get('name', '')}")
    return notes


def apply_container_defaults(pod: Obj, limit_range: Mapping) -> Obj:
    """The pod (a copy, where changed) with the LimitRange's container defaults."""
    requests, limits = container_defaults(limit_range)
    if not requests and not limits:
        return pod
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return pod
    spec = dict(spec)
    notes: list[str] = []
    for field, what in (("containers", "container"), ("initContainers", "init container")):
        containers = spec.get(field)
        if not isinstance(containers, list):
            continue
        copies = []
        for container in containers:
            if isinstance(container, Mapping):
                container = dict(container)
                notes += _merge(container, requests, limits, what)
            copies.append(container)
        spec[field] = copies
    pod = {**pod, "spec": spec}
    if notes:
        metadata = dict(_mapping(pod.get("metadata")))
        metadata["annotations"] = {**_mapping(metadata.get("annotations")),
                                   ANNOTATION: "LimitRanger plugin set: " + "; ".join(notes)}
        pod["metadata"] = metadata
    return pod


# --- constraints --------------------------------------------------------------------------


def _comparable(*values: Quantity) -> list[int]:
    if all(v.whole() <= _MAX_MILLI for v in values):
        return [v.milli() for v in values]
    return [v.whole() for v in values]


def _minimum(kind: str, name: str, enforced: Quantity, requests: ResourceList,
             limits: ResourceList) -> str | None:
    request, limit = requests.get(name), limits.get(name)
    observed_request, observed_limit, bound = _comparable(
        request or _ABSENT, limit or _ABSENT, enforced)
    if request is None:
        return f"minimum {name} usage per {kind} is {enforced}.  No request is specified"
    if observed_request < bound:
        return f"minimum {name} usage per {kind} is {enforced}, but request is {request}"
    if limit is not None and observed_limit < bound:
        return f"minimum {name} usage per {kind} is {enforced}, but limit is {limit}"
    return None


def _maximum(kind: str, name: str, enforced: Quantity, requests: ResourceList,
             limits: ResourceList) -> str | None:
    request, limit = requests.get(name), limits.get(name)
    observed_request, observed_limit, bound = _comparable(
        request or _ABSENT, limit or _ABSENT, enforced)
    if limit is None:
        return f"maximum {name} usage per {kind} is {enforced}.  No limit is specified"
    if observed_limit > bound:
        return f"maximum {name} usage per {kind} is {enforced}, but limit is {limit}"
    if request is not None and observed_request > bound:
        return f"maximum {name} usage per {kind} is {enforced}, but request is {request}"
    return None


def _maximum_request(kind: str, name: str, enforced: Quantity,
                     requests: ResourceList) -> str | None:
    request = requests.get(name)
    observed_request, _, bound = _comparable(request or _ABSENT, _ABSENT, enforced)
    if request is None:
        return f"maximum {name} usage per {kind} is {enforced}.  No request is specified"
    if observed_request > bound:
        return f"maximum {name} usage per {kind} is {enforced}, but request is {request}"
    return None


def _ratio(kind: str, name: str, enforced: Quantity, requests: ResourceList,
           limits: ResourceList) -> str | None:
    request, limit = requests.get(name), limits.get(name)
    observed_request, observed_limit, _ = _comparable(
        request or _ABSENT, limit or _ABSENT, enforced)
    if request is None or observed_request == 0:
        return (f"{name} max limit to request ratio per {kind} is {enforced}, but no request "
                "is specified or request is 0")
    if limit is None or observed_limit == 0:
        return (f"{name} max limit to request ratio per {kind} is {enforced}, but no limit "
                "is specified or limit is 0")
    observed = observed_limit / observed_request
    shown, allowed = observed, float(enforced.whole())
    if enforced.whole() <= _MAX_MILLI:
        observed, allowed = observed * 1000, float(enforced.milli())
    if observed > allowed:
        return (f"{name} max limit to request ratio per {kind} is {enforced}, but provided "
                f"ratio is {shown:f}")
    return None


def _bounds(item: Mapping, kind: str, requests: ResourceList,
            limits: ResourceList) -> list[str]:
    problems = []
    for check, field in ((_minimum, "min"), (_maximum, "max"), (_ratio, "maxLimitRequestRatio")):
        for name, enforced in resourcelists.read(item.get(field)).items():
            problem = check(kind, name, enforced, requests, limits)
            if problem:
                problems.append(problem)
    return problems


def _resources(container: Any) -> tuple[ResourceList, ResourceList]:
    resources = container.get("resources") if isinstance(container, Mapping) else None
    resources = resources if isinstance(resources, Mapping) else {}
    return resourcelists.read(resources.get("requests")), resourcelists.read(resources.get("limits"))


def pod_violations(limit_range: Mapping, pod: Mapping) -> list[str]:
    spec = pod.get("spec") or {}
    problems: list[str] = []
    for item in _items(limit_range):
        if item.get("type") == CONTAINER:
            for container in list(spec.get("containers") or ()) + \
                    list(spec.get("initContainers") or ()):
                problems += _bounds(item, CONTAINER, *_resources(container))
        elif item.get("type") == POD:
            problems += _bounds(item, POD,
                                resourcelists.pod_requests(pod, overhead=False,
                                                           status_resources=False),
                                resourcelists.pod_limits(pod, overhead=False))
    return problems


def claim_violations(limit_range: Mapping, claim: Mapping) -> list[str]:
    requests = resourcelists.read(((claim.get("spec") or {}).get("resources") or {})
                                  .get("requests"))
    problems: list[str] = []
    for item in _items(limit_range):
        if item.get("type") != CLAIM:
            continue
        for name, enforced in resourcelists.read(item.get("min")).items():
            problem = _minimum(CLAIM, name, enforced, requests, {})
            if problem:
                problems.append(problem)
        for name, enforced in resourcelists.read(item.get("max")).items():
            problem = _maximum_request(CLAIM, name, enforced, requests)
            if problem:
                problems.append(problem)
    return problems


def aggregate(messages: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): repeats dropped, several in brackets."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"
