"""Conversion between the versions of a kind that share one storage.

Upstream keeps one copy of an object in etcd, in its storage version, and converts it to and
from every served version on the way in and out (the storage codec). k8py does the same for
the kinds that are served in more than one version:
- built-in kinds with a conversion written here (autoscaling/v1 and autoscaling/v2
  HorizontalPodAutoscalers, stored as v2, as kube-apiserver v1.32 stores them);
- custom resources whose CRD serves several versions (conversion strategy `None`: only
  apiVersion changes).

`convert(obj, api_version)` is the one entry point; it never modifies obj. What a version
cannot hold travels in annotations, as upstream's conversion functions do, so a round trip
through the older version loses nothing (an HPA's v2 metrics are kept in
`autoscaling.alpha.kubernetes.io/metrics` while it is seen as autoscaling/v1).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]

# The annotations in which autoscaling/v1 keeps what only autoscaling/v2 can say
# (pkg/apis/autoscaling/annotations.go).
METRIC_SPECS = "autoscaling.alpha.kubernetes.io/metrics"
METRIC_STATUSES = "autoscaling.alpha.kubernetes.io/current-metrics"
CONDITIONS = "autoscaling.alpha.kubernetes.io/conditions"
BEHAVIOR = "autoscaling.alpha.kubernetes.io/behavior"
DEFAULT_CPU_UTILIZATION = 80


def convert(obj: Obj, api_version: str) -> Obj:
    """obj as `api_version` serves it (a new dict; obj itself when nothing changes)."""
    have = obj.get("apiVersion")
    if have == api_version:
        return obj
    group = api_version.rpartition("/")[0]
    step = _CONVERSIONS.get((group, obj.get("kind"), have, api_version))
    if step is None:  # same schema in both versions (a CRD's None strategy)
        return {**obj, "apiVersion": api_version}
    return step(copy.deepcopy(obj))


# --- HorizontalPodAutoscaler: autoscaling/v2 (storage) <-> autoscaling/v1 ------------------

def hpa_v2_defaults(hpa: Obj) -> Obj:
    """autoscaling/v2's defaults (SetDefaults_HorizontalPodAutoscaler, v1.32): minReplicas 1,
    CPU at 80% when no metric is given, and a behavior's unset rules filled in. Modifies and
    returns hpa."""
    spec = hpa.get("spec")
    if not isinstance(spec, dict):
        return hpa
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    if not spec.get("metrics"):
        spec["metrics"] = [_cpu_utilization(DEFAULT_CPU_UTILIZATION)]
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        behavior["scaleUp"] = _rules(behavior.get("scaleUp"), stabilization=0, policies=[
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15}])
        behavior["scaleDown"] = _rules(behavior.get("scaleDown"), stabilization=None, policies=[
            {"type": "Percent", "value": 100, "periodSeconds": 15}])
    return hpa


def _rules(given: Any, stabilization: int | None, policies: list[Obj]) -> Obj:
    rules: Obj = {}
    if stabilization is not None:
        rules["stabilizationWindowSeconds"] = stabilization
    rules["selectPolicy"] = "Max"
    rules["policies"] = policies
    if isinstance(given, dict):
        rules.update((k, v) for k, v in given.items() if v is not None)
    return rules


def hpa_v1_defaults(hpa: Obj) -> Obj:
    """autoscaling/v1's defaults: minReplicas 1. Modifies and returns hpa."""
    spec = hpa.get("spec")
    if isinstance(spec, dict) and spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    return hpa


def _cpu_utilization(percent: Any) -> Obj:
    return {"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": percent}}}


def _is_cpu_utilization(metric: Obj) -> bool:
    resource = metric.get("resource") or {}
    return (metric.get("type") == "Resource" and resource.get("name") == "cpu"
            and (resource.get("target") or {}).get("averageUtilization") is not None)


def _hpa_v2_to_v1(hpa: Obj) -> Obj:
    hpa["apiVersion"] = "autoscaling/v1"
    metadata = hpa.setdefault("metadata", {})
    spec = hpa.get("spec") or {}
    status = hpa.get("status") or {}
    annotations = dict(metadata.get("annotations") or {})

    v1_spec: Obj = {"scaleTargetRef": spec.get("scaleTargetRef", {})}
    for field in ("minReplicas", "maxReplicas"):
        if field in spec:
            v1_spec[field] = spec[field]
    metrics = spec.get("metrics") or []
    for metric in metrics:
        if metric.get("type") == "Resource" and (metric.get("resource") or {}).get("name") \
                == "cpu":
            utilization = (metric["resource"].get("target") or {}).get("averageUtilization")
            if utilization is not None:
                v1_spec["targetCPUUtilizationPercentage"] = utilization
            break
    others = [_metric_spec_to_v1(m) for m in metrics if not _is_cpu_utilization(m)]
    if others:
        annotations[METRIC_SPECS] = _go_json(others)
    if spec.get("behavior"):
        annotations[BEHAVIOR] = _go_json(spec["behavior"])

    v1_status: Obj = {}
    for field in ("observedGeneration", "lastScaleTime"):
        if status.get(field) is not None:
            v1_status[field] = status[field]
    v1_status["currentReplicas"] = status.get("currentReplicas", 0)
    v1_status["desiredReplicas"] = status.get("desiredReplicas", 0)
    current = status.get("currentMetrics") or []
    for metric in current:
        resource = metric.get("resource") or {}
        if metric.get("type") == "Resource" and resource.get("name") == "cpu":
            utilization = (resource.get("current") or {}).get("averageUtilization")
            if utilization is not None:
                v1_status["currentCPUUtilizationPercentage"] = utilization
    if current:
        annotations[METRIC_STATUSES] = _go_json([_metric_status_to_v1(m) for m in current])
    if status.get("conditions"):
        annotations[CONDITIONS] = _go_json(status["conditions"])

    if annotations:
        metadata["annotations"] = annotations
    hpa["spec"] = v1_spec
    if "status" in hpa:
        hpa["status"] = v1_status
    return hpa


def _hpa_v1_to_v2(hpa: Obj) -> Obj:
    hpa["apiVersion"] = "autoscaling/v2"
    metadata = hpa.setdefault("metadata", {})
    annotations = dict(metadata.get("annotations") or {})
    spec = hpa.get("spec") or {}
    status = hpa.get("status") or {}

    v2_spec: Obj = {"scaleTargetRef": spec.get("scaleTargetRef", {})}
    for field in ("minReplicas", "maxReplicas"):
        if field in spec:
            v2_spec[field] = spec[field]
    metrics = []
    if METRIC_SPECS in annotations:
        metrics = [_metric_spec_to_v2(m) for m in _loads(annotations.pop(METRIC_SPECS))]
    if spec.get("targetCPUUtilizationPercentage") is not None:
        metrics.append(_cpu_utilization(spec["targetCPUUtilizationPercentage"]))
    v2_spec["metrics"] = metrics or [_cpu_utilization(DEFAULT_CPU_UTILIZATION)]
    if BEHAVIOR in annotations:
        behavior = _loads(annotations.pop(BEHAVIOR))
        if isinstance(behavior, dict):
            v2_spec["behavior"] = behavior

    v2_status: Obj = {}
    for field in ("observedGeneration", "lastScaleTime"):
        if status.get(field) is not None:
            v2_status[field] = status[field]
    if status.get("currentReplicas"):
        v2_status["currentReplicas"] = status["currentReplicas"]
    v2_status["desiredReplicas"] = status.get("desiredReplicas", 0)
    current = None
    if METRIC_STATUSES in annotations:
        current = [_metric_status_to_v2(m) for m in _loads(annotations.pop(METRIC_STATUSES))]
    elif status.get("currentCPUUtilizationPercentage") is not None:
        current = [{"type": "Resource", "resource": {"name": "cpu", "current": {
            "averageUtilization": status["currentCPUUtilizationPercentage"]}}}]
    v2_status["currentMetrics"] = current
    if CONDITIONS in annotations:
        conditions = _loads(annotations.pop(CONDITIONS))
        if conditions:
            v2_status["conditions"] = conditions

    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    hpa["spec"] = v2_spec
    if "status" in hpa:
        hpa["status"] = v2_status
    return hpa_v2_defaults(hpa)


# autoscaling/v1 keeps other metrics in the v2beta1 shape (target* fields, metricName)
def _metric_spec_to_v1(metric: Obj) -> Obj:
    kind = metric.get("type", "")
    out: Obj = {"type": kind}
    if kind == "Resource" and metric.get("resource"):
        source = metric["resource"]
        target = source.get("target") or {}
        out["resource"] = _some(name=source.get("name"),
                                targetAverageUtilization=target.get("averageUtilization"),
                                targetAverageValue=target.get("averageValue"))
    elif kind == "ContainerResource" and metric.get("containerResource"):
        source = metric["containerResource"]
        target = source.get("target") or {}
        out["containerResource"] = _some(
            name=source.get("name"), container=source.get("container"),
            targetAverageUtilization=target.get("averageUtilization"),
            targetAverageValue=target.get("averageValue"))
    elif kind == "Pods" and metric.get("pods"):
        source = metric["pods"]
        out["pods"] = _some(metricName=(source.get("metric") or {}).get("name"),
                            targetAverageValue=(source.get("target") or {}).get("averageValue"),
                            selector=(source.get("metric") or {}).get("selector"))
    elif kind == "Object" and metric.get("object"):
        source = metric["object"]
        target = source.get("target") or {}
        out["object"] = _some(target=source.get("describedObject"),
                              metricName=(source.get("metric") or {}).get("name"),
                              targetValue=target.get("value"),
                              selector=(source.get("metric") or {}).get("selector"),
                              averageValue=target.get("averageValue"))
    elif kind == "External" and metric.get("external"):
        source = metric["external"]
        target = source.get("target") or {}
        out["external"] = _some(metricName=(source.get("metric") or {}).get("name"),
                                metricSelector=(source.get("metric") or {}).get("selector"),
                                targetValue=target.get("value"),
                                targetAverageValue=target.get("averageValue"))
    return out


def _metric_spec_to_v2(metric: Obj) -> Obj:
    kind = metric.get("type", "")
    out: Obj = {"type": kind}
    if kind in ("Resource", "ContainerResource") and metric.get(_field(kind)):
        source = metric[_field(kind)]
        utilization = source.get("targetAverageUtilization")
        target = _some(type="Utilization" if utilization is not None else "AverageValue",
                       averageValue=source.get("targetAverageValue"),
                       averageUtilization=utilization)
        out[_field(kind)] = _some(name=source.get("name"), container=source.get("container"),
                                  target=target)
    elif kind == "Pods" and metric.get("pods"):
        source = metric["pods"]
        out["pods"] = {"metric": _some(name=source.get("metricName"),
                                       selector=source.get("selector")),
                       "target": _some(type="AverageValue",
                                       averageValue=source.get("targetAverageValue"))}
    elif kind == "Object" and metric.get("object"):
        source = metric["object"]
        average = source.get("averageValue")
        out["object"] = {
            "describedObject": source.get("target") or {},
            "target": _some(type="AverageValue" if average is not None else "Value",
                            value=source.get("targetValue"), averageValue=average),
            "metric": _some(name=source.get("metricName"), selector=source.get("selector"))}
    elif kind == "External" and metric.get("external"):
        source = metric["external"]
        value = source.get("targetValue")
        out["external"] = {
            "metric": _some(name=source.get("metricName"),
                            selector=source.get("metricSelector")),
            "target": _some(type="AverageValue" if value is None else "Value", value=value,
                            averageValue=source.get("targetAverageValue"))}
    return out


def _metric_status_to_v1(metric: Obj) -> Obj:
    kind = metric.get("type", "")
    out: Obj = {"type": kind}
    field = _field(kind)
    source = metric.get(field) or {}
    current = source.get("current") or {}
    ident = source.get("metric") or {}
    if kind in ("Resource", "ContainerResource"):
        out[field] = _some(name=source.get("name"), container=source.get("container"),
                           currentAverageUtilization=current.get("averageUtilization"),
                           currentAverageValue=current.get("averageValue", "0"))
    elif kind == "Pods":
        out[field] = _some(metricName=ident.get("name"), selector=ident.get("selector"),
                           currentAverageValue=current.get("averageValue", "0"))
    elif kind == "Object":
        out[field] = _some(target=source.get("describedObject"), metricName=ident.get("name"),
                           currentValue=current.get("value", "0"), selector=ident.get("selector"),
                           averageValue=current.get("averageValue"))
    elif kind == "External":
        out[field] = _some(metricName=ident.get("name"), metricSelector=ident.get("selector"),
                           currentValue=current.get("value", "0"),
                           currentAverageValue=current.get("averageValue"))
    return out


def _metric_status_to_v2(metric: Obj) -> Obj:
    kind = metric.get("type", "")
    out: Obj = {"type": kind}
    field = _field(kind)
    source = metric.get(field) or {}
    if kind in ("Resource", "ContainerResource"):
        out[field] = _some(name=source.get("name"), container=source.get("container"),
                           current=_some(averageValue=source.get("currentAverageValue"),
                                         averageUtilization=source.get(
                                             "currentAverageUtilization")))
    elif kind == "Pods":
        out[field] = {"metric": _some(name=source.get("metricName"),
                                      selector=source.get("selector")),
                      "current": _some(averageValue=source.get("currentAverageValue"))}
    elif kind == "Object":
        out[field] = {"metric": _some(name=source.get("metricName"),
                                      selector=source.get("selector")),
                      "current": _some(value=source.get("currentValue"),
                                       averageValue=source.get("averageValue")),
                      "describedObject": source.get("target") or {}}
    elif kind == "External":
        out[field] = {"metric": _some(name=source.get("metricName"),
                                      selector=source.get("metricSelector")),
                      "current": _some(value=source.get("currentValue"),
                                       averageValue=source.get("currentAverageValue"))}
    return out


def _field(kind: str) -> str:
    """The member of a MetricSpec/MetricStatus that holds a metric of this type."""
    return kind[:1].lower() + kind[1:]


def _some(**fields: Any) -> Obj:
    return {k: v for k, v in fields.items() if v is not None}


def _go_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: Any) -> Any:
    """An annotation's JSON; what does not parse is dropped, as a lost hint, not an error
    (upstream refuses it at conversion; k8py would rather serve the object)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return []
    return value if isinstance(value, (list, dict)) else []


_CONVERSIONS: dict[tuple[str, str, str, str], Callable[[Obj], Obj]] = {
    ("autoscaling", "HorizontalPodAutoscaler", "autoscaling/v2", "autoscaling/v1"):
        _hpa_v2_to_v1,
    ("autoscaling", "HorizontalPodAutoscaler", "autoscaling/v1", "autoscaling/v2"):
        _hpa_v1_to_v2,
}
