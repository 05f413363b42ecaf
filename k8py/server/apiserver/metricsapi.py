"""The `metrics.k8s.io/v1beta1` API, served by the API server itself from the points its
scraper keeps (`metricsscraper`), as metrics-server serves it behind k3s's aggregator.

Two read-only resources (verbs get, list; no watch), answered as metrics-server's
`pkg/api` answers:
- `nodes` (NodeMetrics, cluster-scoped): one per Node with usage; labels from the Node;
- `pods` (PodMetrics, namespaced; all namespaces when listed without one): one per Pod
  whose containers all have usage, sorted by namespace and name; labels from the Pod.
Lists take the label selector to the Nodes or Pods; the field selector sees only
`metadata.name` and `metadata.namespace`. Every object is made fresh (`creationTimestamp`
now, no resourceVersion); `timestamp` is the newer point's and `window` the time between
the two points, as a Go duration (`15.012s`); CPU in nano-cores as a DecimalSI quantity
(`250m`, `1234567n`), memory as a BinarySI one (`12Mi`). Get of an object that does not
exist answers as metrics-server's listers do (`pods "p" not found`, `node "n" not found`);
of one without usage yet, `podmetrics.metrics.k8s.io "ns/p" not found` or
`nodemetrics.metrics.k8s.io "n" not found`. Tables (`kubectl get`) have metrics-server's
columns: Name, cpu, memory, Window.

Authorization needs nothing here: the request's attributes are group `metrics.k8s.io`,
resource `nodes` or `pods`, so RBAC decides as for metrics-server (its ClusterRole
`system:aggregated-metrics-reader` aggregates get/list/watch to view, edit and admin; the
HPA controller's bootstrap role lists pods).
"""

from __future__ import annotations

import datetime
from fractions import Fraction
from typing import Any

from k8py.api import errors, selectors, timestamps
from k8py.api.quantity import BINARY_SI, DECIMAL_SI, Quantity
from k8py.api.resources import Registry, Resource
from k8py.server.apiserver import queryparams
from k8py.server.apiserver.metricsscraper import Points, Usage
from k8py.server.apiserver.storage import ObjectStore

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
NODE_METRICS = Resource(GROUP, VERSION, "NodeMetrics", "nodes", False, verbs=("get", "list"))
POD_METRICS = Resource(GROUP, VERSION, "PodMetrics", "pods", True, verbs=("get", "list"))
# metrics-server's `system:aggregated-metrics-reader`, shipped as the add-on's manifest
AGGREGATED_READER = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
    "metadata": {"name": "system:aggregated-metrics-reader", "labels": {
        "k8s-app": "metrics-server",
        "rbac.authorization.k8s.io/aggregate-to-admin": "true",
        "rbac.authorization.k8s.io/aggregate-to-edit": "true",
        "rbac.authorization.k8s.io/aggregate-to-view": "true"}},
    "rules": [{"apiGroups": [GROUP], "resources": ["pods", "nodes"],
               "verbs": ["get", "list", "watch"]}],
}


def install(registry: Registry) -> None:
    """Serve the group (discovery, APIService, routes follow the registry)."""
    registry.add(NODE_METRICS)
    registry.add(POD_METRICS)


def go_duration(nanoseconds: int) -> str:
    """time.Duration.String(): `15.012s`, `1m0.5s`, `1h2m3s`, `800ms`."""
    if nanoseconds == 0:
        return "0s"
    sign, n = ("-", -nanoseconds) if nanoseconds < 0 else ("", nanoseconds)
    if n < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if n >= size:
                return sign + _decimal(n, size) + unit
    hours, rest = divmod(n, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _decimal(rest, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _decimal(n: int, unit: int) -> str:
    whole, frac = divmod(n, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def _time(nanoseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(nanoseconds // 10**9, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _usage(usage: Usage) -> dict[str, str]:
    return {"cpu": str(Quantity(Fraction(usage.nanocores, 10**9), DECIMAL_SI)),
            "memory": str(Quantity(usage.memory, BINARY_SI))}


def _metadata(obj: dict[str, Any], namespaced: bool) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    out: dict[str, Any] = {"name": meta.get("name", "")}
    if namespaced:
        out["namespace"] = meta.get("namespace", "")
    out["creationTimestamp"] = timestamps.now()
    if meta.get("labels"):
        out["labels"] = meta["labels"]
    return out


def node_metrics(node: dict[str, Any], usage: Usage) -> dict[str, Any]:
    return {"kind": "NodeMetrics", "apiVersion": API_VERSION,
            "metadata": _metadata(node, False), "timestamp": _time(usage.timestamp),
            "window": go_duration(usage.window), "usage": _usage(usage)}


def pod_metrics(pod: dict[str, Any], containers: list[tuple[str, Usage]]) -> dict[str, Any]:
    # the pod's time is its containers' earliest (a pod without containers: now, no window)
    earliest = min((u for _, u in containers), key=lambda u: u.timestamp, default=None)
    return {"kind": "PodMetrics", "apiVersion": API_VERSION,
            "metadata": _metadata(pod, True),
            "timestamp": _time(earliest.timestamp) if earliest else timestamps.now(),
            "window": go_duration(earliest.window if earliest else 0),
            "containers": [{"name": name, "usage": _usage(u)} for name, u in containers]}


def table(items: list[dict[str, Any]], include: str) -> dict[str, Any]:
    """metrics-server's Table: Name, then each resource (summed over containers), Window;
    no columns when there are no rows."""
    if include not in ("None", "Metadata", "Object"):
        raise errors.BadRequest(f"invalid includeObject: {include!r}")
    columns: list[dict[str, Any]] = []
    rows = []
    for item in items:
        if "usage" in item:
            usage = {k: Quantity.parse(v) for k, v in item["usage"].items()}
        else:
            usage = {}
            for container in item["containers"]:
                for k, v in container["usage"].items():
                    usage[k] = usage.get(k, Quantity()) + Quantity.parse(v)
        names = sorted(usage)
        if not columns:
            columns = [{"name": "Name", "type": "string", "format": "name",
                        "description": "Name of the resource", "priority": 0}]
            columns += [{"name": n, "type": "string", "format": "quantity",
                         "description": "", "priority": 0} for n in names]
            columns.append({"name": "Window", "type": "string", "format": "duration",
                            "description": "", "priority": 0})
        row: dict[str, Any] = {"cells": [item["metadata"]["name"],
                                         *(str(usage[n]) for n in names), item["window"]]}
        if include == "Object":
            row["object"] = item
        elif include == "Metadata":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": item["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
            "columnDefinitions": columns, "rows": rows}


class MetricsAPI:
    """Answers get and list of the two resources from the Nodes and Pods in the store and
    the scraper's points."""

    def __init__(self, objects: ObjectStore, registry: Registry, points: Points):
        self.objects, self.points = objects, points
        self.nodes = registry.get("", "v1", "nodes")
        self.pods = registry.get("", "v1", "pods")

    async def get(self, resource: Resource, namespace: str | None,
                  name: str) -> dict[str, Any]:
        if resource.plural == "nodes":
            try:
                node = await self.objects.get(self.nodes, None, name)
            except errors.NotFound:  # as the node lister says it
                raise errors.not_found("node", name) from None
            usage = self.points.node(name)
            if usage is None:
                raise errors.not_found("nodemetrics", name, GROUP)
            return node_metrics(node, usage)
        assert namespace is not None
        try:
            pod = await self.objects.get(self.pods, namespace, name)
        except errors.NotFound:
            raise errors.not_found("pods", name) from None
        containers = self.points.pod(namespace, name)
        if containers is None:
            raise errors.not_found("podmetrics", f"{namespace}/{name}", GROUP)
        return pod_metrics(pod, containers)

    async def list(self, resource: Resource, namespace: str | None,
                   query: Any) -> dict[str, Any]:
        try:
            labels = selectors.label_matcher(query.get("labelSelector", ""))
            fields = selectors.field_matcher(query.get("fieldSelector", ""))
        except ValueError as exc:
            raise errors.BadRequest(str(exc)) from None

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            # metrics-server's field set: the object's name and namespace only
            slim = {"metadata": {k: meta[k] for k in ("name", "namespace") if k in meta}}
            return labels(obj) and fields(slim)

        items = []
        if resource.plural == "nodes":
            nodes, _, _ = await self.objects.list(self.nodes, None, matches=matches)
            for node in nodes:
                usage = self.points.node(node["metadata"]["name"])
                if usage is not None:
                    items.append(node_metrics(node, usage))
        else:
            pods, _, _ = await self.objects.list(self.pods, namespace, matches=matches)
            for pod in pods:
                meta = pod["metadata"]
                containers = self.points.pod(meta["namespace"], meta["name"])
                if containers is not None:
                    items.append(pod_metrics(pod, containers))
        items.sort(key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"]))
        return {"kind": resource.list_kind, "apiVersion": API_VERSION, "metadata": {},
                "items": items}

    async def call(self, method: str, resource: Resource, namespace: str | None,
                   name: str | None, subresource: str | None, query: Any) -> dict[str, Any]:
        if method != "GET" or subresource is not None or queryparams.boolean(query, "watch"):
            raise errors.MethodNotAllowed("the server does not allow this method on the "
                                          "requested resource")
        if name is None:
            return await self.list(resource, namespace, query)
        if resource.namespaced and namespace is None:
            raise errors.NotFound("the server could not find the requested resource")
        return await self.get(resource, namespace, name)
