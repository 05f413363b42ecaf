"""A pod's QoS class, as upstream's `ComputePodQOS` (pkg/apis/core/v1/helper/qos) decides it.

Only cpu and memory count, and only amounts above zero. Guaranteed: every container (init
containers too) limits both, and each request equals its limit; BestEffort: nothing
requested or limited; Burstable otherwise. A limit without a request counts as requested,
as upstream's defaulting makes it before the class is computed. The API server sets the
class in a new pod's status; the kubelet reads it from there.
"""

from __future__ import annotations

from typing import Any

from k8py.api import quantity

_COUNTED = ("cpu", "memory")


def pod_qos_class(spec: dict[str, Any]) -> str:
    requests: dict[str, int] = {}
    limits: dict[str, int] = {}
    guaranteed = True
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        resources = (container or {}).get("resources") or {}
        # a limit without a request requests the limit (upstream defaults it so on create)
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, value in wanted.items():
            if name in _COUNTED and (amount := quantity.milli(value)) > 0:
                requests[name] = requests.get(name, 0) + amount
        found = set()
        for name, value in (resources.get("limits") or {}).items():
            if name in _COUNTED and (amount := quantity.milli(value)) > 0:
                found.add(name)
                limits[name] = limits.get(name, 0) + amount
        if found != set(_COUNTED):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and len(requests) == len(limits) and all(
            limits.get(name) == value for name, value in requests.items()):
        return "Guaranteed"
    return "Burstable"
