"""The API server's `/metrics`: upstream's request, in-flight, long-running and storage
metrics by their upstream names and labels, and the process figures, in the Prometheus text
format (`k8py.metrics`).

- `middleware` sits innermost (after authentication, flow control and authorization, where
  upstream instruments its handlers), so `apiserver_request_total` counts what reached a
  handler: 401s, 403s of the authorizer and 429s of flow control are not in it, as upstream's
  filters answer those before its instrumentation.
- Labels as upstream's endpoints/metrics: `verb` upper-case, GET of a collection `LIST`, a
  watch `WATCH`, a server-side apply `APPLY`, exec/attach/log/portforward/proxy `CONNECT`;
  `scope` `resource` (a name, or a create), `namespace`, `cluster`, or empty for
  non-resource paths, which are counted under `subresource=<path>` only for the fixed few
  paths upstream instruments (health, version, metrics, OpenAPI, discovery roots) so a
  client cannot grow the label sets with made-up URLs; `component` `apiserver`; `dry_run`
  `All` or empty.
- Long-running requests (watch and the CONNECT subresources) are in
  `apiserver_longrunning_requests` while they last; `apiserver_current_inflight_requests`
  is the seats flow control has given out now, per pool (`readOnly`, `mutating`).
- `etcd_request_duration_seconds{operation,type}` and `etcd_requests_total` time every
  store call `storage.ObjectStore` makes (its `observe` hook), `type` the group-resource
  (`pods`, `deployments.apps`) as upstream 1.32 labels it.
- The requests of the in-process transport (the control loops) do not cross HTTP and are
  not counted; their store calls are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from k8py import metrics
from k8py.api import errors
from k8py.api.resources import Resource
from k8py.server.apiserver import flowcontrol, requestinfo

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

APPLY_PATCH = "application/apply-patch+yaml"
CONNECT_SUBRESOURCES = frozenset({"attach", "exec", "log", "portforward", "proxy"})
#: non-resource paths counted, under subresource=<path>
COUNTED_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/metrics",
                           "/openapi/v2", "/openapi/v3", "/api", "/apis"})
_REQUEST_LABELS = ("verb", "dry_run", "group", "version", "resource", "subresource", "scope",
                   "component")
_LONG_RUNNING_LABELS = ("verb", "group", "version", "resource", "subresource", "scope",
                        "component")


def scope_of(info: requestinfo.RequestInfo) -> str:
    """Upstream's CleanScope."""
    if info.name or info.verb == "create":
        return "resource"
    if info.namespace:
        return "namespace"
    return "cluster" if info.resource_request else ""


def reported_verb(info: requestinfo.RequestInfo, method: str, content_type: str,
                  scope: str) -> str:
    """Upstream's CanonicalVerb then CleanVerb."""
    verb = method.upper()
    if verb in ("GET", "HEAD"):
        verb = "GET" if scope in ("resource", "") else "LIST"
    if info.verb == "watch":
        verb = "WATCH"
    if verb == "PATCH" and content_type == APPLY_PATCH:
        verb = "APPLY"
    if info.resource_request and info.subresource in CONNECT_SUBRESOURCES:
        verb = "CONNECT"
    return verb


def dry_run_of(values: list[str]) -> str:
    """Upstream's cleanDryRun: the distinct values, sorted; `invalid` for anything but All."""
    if any(v != "All" for v in values):
        return "invalid"
    return ",".join(sorted(set(values)))


class APIServerMetrics:
    """The families of one API server and the middleware and handler that feed and serve
    them."""

    def __init__(self, flow_control: flowcontrol.FlowControl | None = None):
        self.flow_control = flow_control
        self.registry = metrics.Registry()
        add = self.registry.add
        self.requests = add(metrics.Counter(
            "apiserver_request_total", "Counter of apiserver requests broken out for each "
            "verb, dry run value, group, version, resource, scope, component, and HTTP "
            "response code.", _REQUEST_LABELS + ("code",)))
        self.durations = add(metrics.Histogram(
            "apiserver_request_duration_seconds", "Response latency distribution in seconds "
            "for each verb, dry run value, group, version, resource, subresource, scope and "
            "component.", _REQUEST_LABELS))
        self.long_running = add(metrics.Gauge(
            "apiserver_longrunning_requests", "Gauge of all active long-running apiserver "
            "requests broken out by verb, group, version, resource, scope and component. "
            "Not all requests are tracked this way.", _LONG_RUNNING_LABELS))
        self.store_durations = add(metrics.Histogram(
            "etcd_request_duration_seconds", "Etcd request latency in seconds for each "
            "operation and object type.", ("operation", "type")))
        self.store_requests = add(metrics.Counter(
            "etcd_requests_total", "Etcd request counts for each operation and object type.",
            ("operation", "type")))
        self.registry.collectors.append(self._inflight)
        self.registry.collectors.append(metrics.process_families)

    def _inflight(self) -> list[metrics.Family]:
        gauge = metrics.Gauge("apiserver_current_inflight_requests", "Maximal number of "
                              "currently used inflight request limit of this apiserver per "
                              "request kind in last second.", ("request_kind",))
        pools = self.flow_control.pools if self.flow_control is not None else {}
        for mutating, kind in ((False, "readOnly"), (True, "mutating")):
            pool = pools.get(mutating)
            gauge.set(kind, value=pool.serving if pool is not None else 0)
        return [gauge]

    def observe_storage(self, operation: str, resource: Resource, seconds: float) -> None:
        kind = resource.qualified
        self.store_durations.observe(operation, kind, value=seconds)
        self.store_requests.inc(operation, kind)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        info = requestinfo.request_info(request.method, request.path, request.query)
        if not info.resource_request and request.path not in COUNTED_PATHS:
            return await handler(request)
        scope = scope_of(info)
        verb = reported_verb(info, request.method, request.content_type, scope)
        if info.resource_request:
            where = (info.api_group, info.api_version, info.resource, info.subresource)
        else:
            where = ("", "", "", request.path)
        labels = (verb, dry_run_of(request.query.getall("dryRun", [])), *where, scope,
                  "apiserver")
        long_running = info.long_running
        gauge_labels = (verb, *where, scope, "apiserver")
        if long_running:
            self.long_running.add(*gauge_labels, amount=1)
        start = time.monotonic()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except errors.StatusError as exc:
            code = exc.code
            raise
        except web.HTTPException as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:
            # a watcher (or exec, log -f) that left ends its stream: an answered request
            code = 200 if long_running else 499
            raise
        finally:
            if long_running:
                self.long_running.add(*gauge_labels, amount=-1)
            self.requests.inc(*labels, str(code))
            self.durations.observe(*labels, value=time.monotonic() - start)

    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(body=self.registry.exposition().encode(),
                            headers={"Content-Type": metrics.CONTENT_TYPE})
