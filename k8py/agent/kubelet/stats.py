"""Resource usage of this node, its pods and their containers, as upstream's kubelet serves
it: `/stats/summary` (the Summary API's JSON, `stats.k8s.io/v1alpha1`) and
`/metrics/resource` (the Prometheus families metrics-server scrapes).

Where the figures come from, as upstream's CRI stats provider:
- containers: the runtime's `ListContainerStats` (CPU core-nanoseconds and nano-cores,
  memory working set, usage and RSS, the writable layer), matched to their pods by the
  labels the kubelet put on them (`specs.POD_NAME`, ...); their start times from
  `ListContainers`;
- pods: the sum of their containers (the sandbox's own usage is the pause process's,
  negligible);
- the node: `/proc/stat` (CPU time of all CPUs but idle and iowait) and `/proc/meminfo`
  (working set = total - free - inactive file pages, as cadvisor computes it for the root
  cgroup). Nano-cores for the node are the rate since the previous read.

Pure functions over those inputs (`summary`, `resource_metrics`) plus `Collector`, which
reads them; the server module only routes.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable
from typing import Any

from k8py import metrics
from k8py.agent.kubelet.specs import CONTAINER_NAME, POD_NAME, POD_NAMESPACE
from k8py.runtime import cri_pb2 as pb

_CPU_IDLE_FIELDS = (3, 4)  # idle, iowait in the `cpu` line of /proc/stat


def _rfc3339(nanoseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(nanoseconds // 10**9, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sample_time(nanoseconds: int) -> str:
    """When a figure was read, to the millisecond (`...:05.250Z`; RFC 3339, which Go's
    metav1.Time parses): `/metrics/resource` stamps its samples with it, and metrics-server
    divides CPU by the time between two samples, which whole seconds would skew by up to
    a second in fifteen."""
    ms = nanoseconds // 10**6 % 1000
    whole = _rfc3339(nanoseconds)
    return whole if not ms else f"{whole[:-1]}.{ms:03d}Z"


def node_cpu_seconds(proc_stat: str) -> float:
    """CPU seconds the node has spent busy, from the text of /proc/stat."""
    for line in proc_stat.splitlines():
        if line.startswith("cpu "):
            ticks = [int(x) for x in line.split()[1:]]
            busy = sum(t for i, t in enumerate(ticks[:8]) if i not in _CPU_IDLE_FIELDS)
            return busy / os.sysconf("SC_CLK_TCK")
    raise ValueError("no cpu line in /proc/stat")


def node_memory(meminfo: str) -> dict[str, int]:
    """availableBytes, usageBytes, workingSetBytes from the text of /proc/meminfo."""
    kib = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            kib[key] = int(parts[0]) * 1024
    usage = kib["MemTotal"] - kib["MemFree"]
    return {"availableBytes": kib.get("MemAvailable", kib["MemFree"]), "usageBytes": usage,
            "workingSetBytes": max(usage - kib.get("Inactive(file)", 0), 0)}


def _cpu(usage: pb.CpuUsage) -> dict[str, Any]:
    out: dict[str, Any] = {"time": _sample_time(usage.timestamp)}
    if usage.HasField("usage_nano_cores"):
        out["usageNanoCores"] = usage.usage_nano_cores.value
    if usage.HasField("usage_core_nano_seconds"):
        out["usageCoreNanoSeconds"] = usage.usage_core_nano_seconds.value
    return out


def _memory(usage: pb.MemoryUsage) -> dict[str, Any]:
    out: dict[str, Any] = {"time": _sample_time(usage.timestamp)}
    for field, key in (("available_bytes", "availableBytes"), ("usage_bytes", "usageBytes"),
                       ("working_set_bytes", "workingSetBytes"), ("rss_bytes", "rssBytes"),
                       ("page_faults", "pageFaults"),
                       ("major_page_faults", "majorPageFaults")):
        if usage.HasField(field):
            out[key] = getattr(usage, field).value
    return out


def _summed(parts: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"time": max((p["time"] for p in parts), key=_seconds,
                                       default=_sample_time(time.time_ns()))}
    for key in keys:
        values = [p[key] for p in parts if key in p]
        if values:
            out[key] = sum(values)
    return out


def summary(node_name: str, node: dict[str, Any], pods: Iterable[dict[str, Any]],
            stats: Iterable[pb.ContainerStats],
            started: dict[str, int]) -> dict[str, Any]:
    """The Summary API's answer. `node` has `cpu`, `memory` (and `startTime`); `pods` are
    this node's pods; `stats` the runtime's container stats; `started` container id →
    created_at (nanoseconds)."""
    by_pod: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in stats:
        labels = s.attributes.labels
        key = (labels.get(POD_NAMESPACE, ""), labels.get(POD_NAME, ""))
        container: dict[str, Any] = {
            "name": labels.get(CONTAINER_NAME, s.attributes.metadata.name),
            "startTime": _rfc3339(started.get(s.attributes.id, 0)),
            "cpu": _cpu(s.cpu), "memory": _memory(s.memory)}
        if s.HasField("writable_layer") and s.writable_layer.HasField("used_bytes"):
            container["rootfs"] = {"time": _rfc3339(s.writable_layer.timestamp),
                                   "usedBytes": s.writable_layer.used_bytes.value}
        by_pod.setdefault(key, []).append(container)
    out_pods = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace", "default"), meta.get("name", ""))
        containers = by_pod.get(key)
        if not containers:
            continue
        containers.sort(key=lambda c: c["name"])
        entry = {
            "podRef": {"name": key[1], "namespace": key[0], "uid": meta.get("uid", "")},
            "startTime": (pod.get("status") or {}).get("startTime") or
            meta.get("creationTimestamp", ""),
            "containers": containers,
            "cpu": _summed([c["cpu"] for c in containers],
                           ("usageNanoCores", "usageCoreNanoSeconds")),
            "memory": _summed([c["memory"] for c in containers],
                              ("usageBytes", "workingSetBytes", "rssBytes", "pageFaults",
                               "majorPageFaults")),
        }
        out_pods.append(entry)
    return {"node": {"nodeName": node_name, **node}, "pods": out_pods}


def _seconds(rfc3339: str) -> float:
    whole, _, fraction = rfc3339.rstrip("Z").partition(".")
    seconds = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


def _ms(rfc3339: str) -> int:
    return round(_seconds(rfc3339) * 1000)


def resource_metrics(summary: dict[str, Any], scrape_error: bool = False) -> str:
    """`/metrics/resource` of a summary: upstream's families, samples timestamped (ms) with
    the time the figure was read, as metrics-server expects."""
    registry = metrics.Registry()
    c_cpu = registry.add(metrics.Counter(
        "container_cpu_usage_seconds_total", "[STABLE] Cumulative cpu time consumed by the "
        "container in core-seconds", ("container", "namespace", "pod")))
    c_mem = registry.add(metrics.Gauge(
        "container_memory_working_set_bytes", "[STABLE] Current working set of the "
        "container in bytes", ("container", "namespace", "pod")))
    c_start = registry.add(metrics.Gauge(
        "container_start_time_seconds", "[STABLE] Start time of the container since unix "
        "epoch in seconds", ("container", "namespace", "pod")))
    n_cpu = registry.add(metrics.Counter(
        "node_cpu_usage_seconds_total", "[STABLE] Cumulative cpu time consumed by the node "
        "in core-seconds"))
    n_mem = registry.add(metrics.Gauge(
        "node_memory_working_set_bytes", "[STABLE] Current working set of the node in bytes"))
    p_cpu = registry.add(metrics.Counter(
        "pod_cpu_usage_seconds_total", "[STABLE] Cumulative cpu time consumed by the pod in "
        "core-seconds", ("namespace", "pod")))
    p_mem = registry.add(metrics.Gauge(
        "pod_memory_working_set_bytes", "[STABLE] Current working set of the pod in bytes",
        ("namespace", "pod")))
    error = registry.add(metrics.Gauge(
        "scrape_error", "[ALPHA] 1 if there was an error while getting container metrics, "
        "0 otherwise"))
    node = summary["node"]
    if "usageCoreNanoSeconds" in node.get("cpu", {}):
        n_cpu.stamp(value=node["cpu"]["usageCoreNanoSeconds"] / 1e9,
                    timestamp_ms=_ms(node["cpu"]["time"]))
    if "workingSetBytes" in node.get("memory", {}):
        n_mem.stamp(value=node["memory"]["workingSetBytes"],
                    timestamp_ms=_ms(node["memory"]["time"]))
    for pod in summary["pods"]:
        ns, name = pod["podRef"]["namespace"], pod["podRef"]["name"]
        for c in pod["containers"]:
            labels = (c["name"], ns, name)
            if "usageCoreNanoSeconds" in c["cpu"]:
                c_cpu.stamp(*labels, value=c["cpu"]["usageCoreNanoSeconds"] / 1e9,
                            timestamp_ms=_ms(c["cpu"]["time"]))
            if "workingSetBytes" in c["memory"]:
                c_mem.stamp(*labels, value=c["memory"]["workingSetBytes"],
                            timestamp_ms=_ms(c["memory"]["time"]))
            c_start.stamp(*labels, value=_seconds(c["startTime"]),
                          timestamp_ms=_ms(c["startTime"]))
        if "usageCoreNanoSeconds" in pod["cpu"]:
            p_cpu.stamp(ns, name, value=pod["cpu"]["usageCoreNanoSeconds"] / 1e9,
                        timestamp_ms=_ms(pod["cpu"]["time"]))
        if "workingSetBytes" in pod["memory"]:
            p_mem.stamp(ns, name, value=pod["memory"]["workingSetBytes"],
                        timestamp_ms=_ms(pod["memory"]["time"]))
    error.set(value=1 if scrape_error else 0)
    return registry.exposition()


class Collector:
    """Reads the figures `summary` needs: the runtime's, and the node's from /proc."""

    def __init__(self, cri, node_name: str, proc: str = "/proc"):
        self.cri, self.node_name, self.proc = cri, node_name, proc
        self._last_cpu: tuple[float, float] | None = None  # (monotonic, cpu seconds)

    def node(self) -> dict[str, Any]:
        now_ns = time.time_ns()
        with open(os.path.join(self.proc, "stat"), encoding="ascii") as f:
            proc_stat = f.read()
        with open(os.path.join(self.proc, "meminfo"), encoding="ascii") as f:
            meminfo = f.read()
        cpu_seconds = node_cpu_seconds(proc_stat)
        cpu: dict[str, Any] = {"time": _sample_time(now_ns),
                               "usageCoreNanoSeconds": int(cpu_seconds * 1e9)}
        moment = time.monotonic()
        if self._last_cpu is not None and moment > self._last_cpu[0]:
            rate = (cpu_seconds - self._last_cpu[1]) / (moment - self._last_cpu[0])
            cpu["usageNanoCores"] = max(int(rate * 1e9), 0)
        self._last_cpu = (moment, cpu_seconds)
        boot = next(int(line.split()[1]) for line in proc_stat.splitlines()
                    if line.startswith("btime "))
        return {"startTime": _rfc3339(boot * 10**9), "cpu": cpu,
                "memory": {"time": _sample_time(now_ns), **node_memory(meminfo)}}

    async def summary(self, pods: Iterable[dict[str, Any]]) -> dict[str, Any]:
        stats = await self.cri.list_container_stats()
        started = {c.id: c.created_at for c in await self.cri.list_containers()}
        return summary(self.node_name, self.node(), list(pods), stats, started)
