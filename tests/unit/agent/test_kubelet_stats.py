"""The kubelet's stats from CRI figures and /proc text: pods are the sum of their
containers, the node's CPU excludes idle and iowait, its working set excludes inactive file
pages; the resource metrics parse with prometheus_client's parser."""

from __future__ import annotations

import os

from prometheus_client.parser import text_string_to_metric_families

from k8py.agent.kubelet import stats
from k8py.runtime import cri_pb2 as pb

PROC_STAT = "cpu  100 20 30 4000 50 6 7 8 0 0\ncpu0 1 2 3 4\nbtime 1700000000\n"
MEMINFO = ("MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\n"
           "Inactive(file):  300 kB\n")


def _container(pod: str, name: str, cpu_ns: int, memory: int) -> pb.ContainerStats:
    return pb.ContainerStats(
        attributes=pb.ContainerAttributes(id=f"{pod}-{name}", labels={
            "io.kubernetes.pod.name": pod, "io.kubernetes.pod.namespace": "ns",
            "io.kubernetes.container.name": name}),
        cpu=pb.CpuUsage(timestamp=10**18, usage_core_nano_seconds=pb.UInt64Value(
            value=cpu_ns)),
        memory=pb.MemoryUsage(timestamp=10**18, working_set_bytes=pb.UInt64Value(
            value=memory)))


def test_node_figures_from_proc():
    ticks = os.sysconf("SC_CLK_TCK")
    assert stats.node_cpu_seconds(PROC_STAT) == (100 + 20 + 30 + 6 + 7 + 8) / ticks
    assert stats.node_memory(MEMINFO) == {"availableBytes": 600 * 1024,
                                          "usageBytes": 800 * 1024,
                                          "workingSetBytes": 500 * 1024}


def test_pods_sum_their_containers_and_metrics_parse():
    pods = [{"metadata": {"name": "a", "namespace": "ns", "uid": "ua"},
             "status": {"startTime": "2024-01-01T00:00:00Z"}},
            {"metadata": {"name": "idle", "namespace": "ns", "uid": "ub"}}]
    node = {"cpu": {"time": "2024-01-01T00:00:10Z", "usageCoreNanoSeconds": 5 * 10**9},
            "memory": {"time": "2024-01-01T00:00:10Z", "workingSetBytes": 4096}}
    result = stats.summary("n1", node, pods, [_container("a", "x", 10**9, 100),
                                               _container("a", "y", 3 * 10**9, 50)], {})
    [pod] = result["pods"]  # a pod without containers running has no stats
    assert pod["cpu"]["usageCoreNanoSeconds"] == 4 * 10**9
    assert pod["memory"]["workingSetBytes"] == 150
    assert [c["name"] for c in pod["containers"]] == ["x", "y"]
    families = {f.name: f for f in text_string_to_metric_families(
        stats.resource_metrics(result))}
    assert families["pod_cpu_usage_seconds"].samples[0].value == 4
    assert families["pod_cpu_usage_seconds"].type == "counter"
    assert families["node_memory_working_set_bytes"].samples[0].value == 4096
    assert {s.labels["container"]: s.value for s in
            families["container_memory_working_set_bytes"].samples} == {"x": 100, "y": 50}
