"""The metrics pipeline's pure parts: decoding a kubelet's /metrics/resource, keeping two
points (metrics-server's storage rules), the CPU rate, and the API's forms (quantities, Go
durations, Tables)."""

from __future__ import annotations

import pytest

from k8py.agent.kubelet import stats
from k8py.server.apiserver import metricsapi
from k8py.server.apiserver.metricsscraper import Batch, Point, Points, decode, usage

S = 10**9  # nanoseconds per second
T0 = 1_700_000_000 * S


def summary(cpu_seconds: float, at: int, memory: int = 64 << 20, started: int = T0 - 3600 * S):
    """A kubelet summary of node n1 with one pod default/web (container main)."""
    stamp = stats._sample_time(at)
    return {
        "node": {"nodeName": "n1",
                 "cpu": {"time": stamp, "usageCoreNanoSeconds": int(cpu_seconds * 4 * S)},
                 "memory": {"time": stamp, "workingSetBytes": 1 << 30}},
        "pods": [{"podRef": {"name": "web", "namespace": "default", "uid": "u"},
                  "containers": [{"name": "main", "startTime": stats._rfc3339(started),
                                  "cpu": {"time": stamp,
                                          "usageCoreNanoSeconds": int(cpu_seconds * S)},
                                  "memory": {"time": stamp, "workingSetBytes": memory}}],
                  "cpu": {"time": stamp, "usageCoreNanoSeconds": int(cpu_seconds * S)},
                  "memory": {"time": stamp, "workingSetBytes": memory}}]}


def test_decode_reads_the_kubelets_own_exposition():
    text = stats.resource_metrics(summary(12.5, T0))
    batch = decode(text, "n1", 0)
    assert batch.nodes == {"n1": Point(0, T0, 50 * S, 1 << 30)}
    assert batch.pods == {("default", "web"): {"main": Point(T0 - 3600 * S, T0, int(12.5 * S),
                                                             64 << 20)}}


def test_decode_drops_a_pod_with_an_incomplete_container_and_unescapes_labels():
    text = ('container_cpu_usage_seconds_total{container="a",namespace="ns",pod="p"} 1 1000\n'
            'container_cpu_usage_seconds_total{container="b",namespace="ns",pod="p"} 1 1000\n'
            'container_memory_working_set_bytes{container="b",namespace="ns",pod="p"} 5 1000\n'
            'container_cpu_usage_seconds_total{container="x",namespace="ns",pod="q\\"r"} 2\n'
            'container_memory_working_set_bytes{container="x",namespace="ns",pod="q\\"r"} 7\n'
            '# HELP junk\nnot a sample line at all\n')
    batch = decode(text, "n1", 5000)
    assert list(batch.pods) == [("ns", 'q"r')]
    assert batch.pods[("ns", 'q"r')]["x"] == Point(0, 5000 * 10**6, 2 * S, 7)
    assert batch.nodes == {}  # no node figures: no node point


def test_usage_is_the_cpu_rate_over_the_window_in_nanocores():
    u = usage(Point(0, T0 + 15 * S, 13 * S, 100), Point(0, T0, 10 * S, 50))
    assert (u.nanocores, u.memory, u.timestamp, u.window) == (200_000_000, 100, T0 + 15 * S,
                                                              15 * S)
    with pytest.raises(ValueError):
        usage(Point(0, T0 + S, 1, 1), Point(0, T0, 2, 1))  # the counter went back
    with pytest.raises(ValueError):
        usage(Point(0, T0, 2, 1), Point(0, T0, 1, 1))  # no window


def batch_at(seconds: float, cpu_seconds: float, **kwargs) -> Batch:
    return decode(stats.resource_metrics(summary(cpu_seconds, T0 + int(seconds * S),
                                                 **kwargs)), "n1", 0)


def test_two_scrapes_make_metrics_and_one_does_not():
    points = Points(15)
    points.store(batch_at(0, 100))
    assert points.node("n1") is None and points.pod("default", "web") is None
    points.store(batch_at(15, 103))  # 3 s of CPU in 15 s: 200m; node: 4x that
    assert points.node("n1").nanocores == 800_000_000
    [(name, u)] = points.pod("default", "web")
    assert (name, u.nanocores, u.window) == ("main", 200_000_000, 15 * S)
    points.store(batch_at(15, 103))  # the same sample again: the older point is kept
    assert points.pod("default", "web")[0][1].window == 15 * S
    points.store(Batch())  # the node did not answer: everything on it is forgotten
    assert points.node("n1") is None and points.pod("default", "web") is None


def test_a_restarted_container_starts_over():
    points = Points(15)
    points.store(batch_at(0, 100))
    # restarted after the first point (1 s ago: too fresh to count from its start)
    points.store(batch_at(15, 101, started=T0 + 14 * S))
    assert points.pod("default", "web") is None


def test_a_fresh_container_counts_from_its_start():
    points = Points(15)
    # started 12 s before its first point (between 10 s and one resolution): the start, at
    # zero CPU, is the older point
    points.store(batch_at(12, 3, started=T0))
    [(_, u)] = points.pod("default", "web")
    assert (u.nanocores, u.window) == (250_000_000, 12 * S)


@pytest.mark.parametrize("ns, text", [
    (0, "0s"), (15 * S, "15s"), (15_012_000_000, "15.012s"), (60 * S + S // 2, "1m0.5s"),
    (3723 * S, "1h2m3s"), (800_000_000, "800ms"), (1500, "1.5µs"), (7, "7ns")])
def test_go_durations(ns, text):
    assert metricsapi.go_duration(ns) == text


def test_objects_and_table_as_metrics_server_writes_them():
    points = Points(15)
    points.store(batch_at(0, 100, memory=12 << 20))
    points.store(batch_at(15.5, 101.234567))
    node = {"metadata": {"name": "n1", "labels": {"a": "b"}}}
    pod = {"metadata": {"name": "web", "namespace": "default"}}
    nm = metricsapi.node_metrics(node, points.node("n1"))
    pm = metricsapi.pod_metrics(pod, points.pod("default", "web"))
    # 1.234567 s of CPU in 15.5 s; the node has four times that
    assert nm["usage"] == {"cpu": "318597935n", "memory": "1Gi"}
    assert pm["containers"] == [{"name": "main", "usage": {"cpu": "79649483n",
                                                           "memory": "64Mi"}}]
    assert pm["window"] == "15.5s" and nm["metadata"]["labels"] == {"a": "b"}
    assert list(pm) == ["kind", "apiVersion", "metadata", "timestamp", "window", "containers"]
    table = metricsapi.table([pm], "Metadata")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "cpu", "memory",
                                                               "Window"]
    assert table["rows"][0]["cells"] == ["web", pm["containers"][0]["usage"]["cpu"], "64Mi",
                                         "15.5s"]
    assert metricsapi.table([], "Metadata")["columnDefinitions"] == []
