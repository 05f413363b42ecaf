"""The Prometheus text format of `k8py.metrics`, read back with prometheus_client's parser
(what Prometheus itself accepts), and the request labels of the API server's metrics."""

from __future__ import annotations

import os
import time

from prometheus_client.parser import text_string_to_metric_families

from k8py import metrics
from k8py.server.apiserver import metrics as apiserver_metrics
from k8py.server.apiserver.requestinfo import request_info


def _parsed(registry: metrics.Registry) -> dict:
    return {f.name: f for f in text_string_to_metric_families(registry.exposition())}


def test_counter_gauge_and_histogram_parse_with_their_labels():
    registry = metrics.Registry()
    counter = registry.add(metrics.Counter("things_total", "Things.\nCounted \\ here.",
                                           ("kind",)))
    counter.inc('a "quoted"\nvalue\\')
    counter.inc("b", amount=2)
    gauge = registry.add(metrics.Gauge("level", "A level."))
    gauge.set(value=1.5)
    histogram = registry.add(metrics.Histogram("wait_seconds", "Waits.", ("op",),
                                               buckets=(0.005, 1, 2.5)))
    for value in (0.001, 0.5, 2, 100):
        histogram.observe("get", value=value)
    families = _parsed(registry)
    things = {s.labels["kind"]: s.value for s in families["things"].samples}
    assert things == {'a "quoted"\nvalue\\': 1.0, "b": 2.0}
    assert families["things"].type == "counter"
    assert families["things"].documentation == "Things.\nCounted \\ here."
    assert families["level"].samples[0].value == 1.5
    samples = families["wait_seconds"].samples
    buckets = {s.labels["le"]: s.value for s in samples if s.name == "wait_seconds_bucket"}
    assert buckets == {"0.005": 1, "1": 2, "2.5": 3, "+Inf": 4}
    assert {s.name: s.value for s in samples if "le" not in s.labels} == {
        "wait_seconds_sum": 102.501, "wait_seconds_count": 4}


def test_numbers_are_written_as_go_writes_them():
    assert [metrics.number(v) for v in (1.0, 0.005, 60, float("inf"), 1e20)] == \
        ["1", "0.005", "60", "+Inf", "1e+20"]
    text = metrics.Registry()
    h = text.add(metrics.Histogram("h", "h"))
    h.observe(value=0.1)
    assert 'h_bucket{le="1"} 1' in text.exposition()
    assert 'h_bucket{le="0.005"} 0' in text.exposition()


def test_process_families_describe_this_process():
    registry = metrics.Registry()
    registry.collectors.append(metrics.process_families)
    families = _parsed(registry)
    value = {name: families[name].samples[0].value for name in families}
    assert value["process_resident_memory_bytes"] > 1 << 20
    assert 0 < value["process_open_fds"] <= len(os.listdir("/proc/self/fd")) + 2
    assert time.time() - 86400 * 30 < value["process_start_time_seconds"] <= time.time()
    assert families["process_cpu_seconds"].type == "counter"
    assert value["process_cpu_seconds"] > 0


def _labels(method, path, query=None, content_type=""):
    info = request_info(method, path, query or {})
    scope = apiserver_metrics.scope_of(info)
    return apiserver_metrics.reported_verb(info, method, content_type, scope), scope


def test_verbs_and_scopes_as_upstream_reports_them():
    assert _labels("GET", "/api/v1/namespaces/default/pods") == ("LIST", "namespace")
    assert _labels("GET", "/api/v1/pods") == ("LIST", "cluster")
    assert _labels("GET", "/api/v1/namespaces/default/pods/p") == ("GET", "resource")
    assert _labels("GET", "/api/v1/pods", {"watch": "true"}) == ("WATCH", "cluster")
    assert _labels("POST", "/api/v1/namespaces/default/pods") == ("POST", "resource")
    assert _labels("PUT", "/api/v1/nodes/n") == ("PUT", "resource")
    assert _labels("DELETE", "/api/v1/namespaces/x/pods") == ("DELETE", "namespace")
    assert _labels("PATCH", "/apis/apps/v1/namespaces/d/deployments/x",
                   content_type="application/apply-patch+yaml") == ("APPLY", "resource")
    assert _labels("POST", "/api/v1/namespaces/d/pods/p/exec") == ("CONNECT", "resource")
    assert _labels("GET", "/healthz") == ("GET", "")
    assert apiserver_metrics.dry_run_of([]) == ""
    assert apiserver_metrics.dry_run_of(["All", "All"]) == "All"
    assert apiserver_metrics.dry_run_of(["Some"]) == "invalid"
