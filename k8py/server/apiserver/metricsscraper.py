"""Resource metrics of nodes and containers, scraped from kubelets as metrics-server does,
for the `metrics.k8s.io` API (`metricsapi`).

Every `resolution` seconds (`--metric-resolution`, 15 s by default) the scraper lists the
Nodes, and asks each node's kubelet for `/metrics/resource` at once (with the API server's
kubelet client certificate, as for logs and exec; a node without a kubelet endpoint, such
as a simulated one, is skipped), each within 90% of the resolution. What the kubelets
answered becomes one batch, and `Points.store` keeps, per node and per container, the last
two points whose timestamps differ (metrics-server's storage): a node or pod absent from a
batch is forgotten, a container whose start time is after the older point restarted and
keeps only the new one, and a container started 10 s or more but less than one resolution
ago gets its start (zero CPU) as the older point, so a fresh pod shows up after one scrape.

A point is (start time, timestamp, cumulative CPU in core-nanoseconds, memory working set
in bytes), with the kubelet's own sample timestamps (milliseconds). Usage between two points
(`usage`) is the CPU rate in nano-cores over the window between their timestamps and the
newer point's working set (the kubelet's seconds are whole nanoseconds: they are rounded back
to them, not truncated); a pod's timestamp and window are its containers' earliest.
Nothing is ever reported from a single point: until a node or pod has two, it is absent,
and kubectl says "metrics not available yet".
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp

from k8py.api import errors
from k8py.api.resources import Resource
from k8py.server.apiserver.podproxy import KubeletClient, endpoint
from k8py.server.apiserver.storage import ObjectStore

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION = 15.0
FRESH_CONTAINER_MIN_NS = 10 * 10**9  # metrics-server's freshContainerMinMetricsResolution

_NODE_CPU = "node_cpu_usage_seconds_total"
_NODE_MEMORY = "node_memory_working_set_bytes"
_CONTAINER_CPU = "container_cpu_usage_seconds_total"
_CONTAINER_MEMORY = "container_memory_working_set_bytes"
_CONTAINER_START = "container_start_time_seconds"

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?\s*$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclasses.dataclass(frozen=True)
class Point:
    """One reading: times in nanoseconds since the epoch (start 0 when unknown)."""
    start: int
    timestamp: int
    cpu: int  # cumulative core-nanoseconds
    memory: int  # working set bytes


@dataclasses.dataclass(frozen=True)
class Usage:
    nanocores: int
    memory: int
    timestamp: int  # the newer point's, nanoseconds
    window: int  # nanoseconds between the two points


@dataclasses.dataclass
class Batch:
    """One scrape of every kubelet: nodes by name, containers by (namespace, pod)."""
    nodes: dict[str, Point] = dataclasses.field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Point]] = dataclasses.field(default_factory=dict)


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float, int | None]]:
    """(name, labels, value, timestamp in ms or None) of each sample of a Prometheus text
    exposition; comments and lines that are not samples are skipped."""
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if line.startswith("#") or match is None:
            continue
        name, label_text, value, stamp = match.groups()
        labels = {}
        for label in _LABEL.finditer(label_text or ""):
            labels[label.group(1)] = re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)],
                                            label.group(2))
        try:
            number = float(value)
        except ValueError:
            continue
        yield name, labels, number, int(stamp) if stamp is not None else None


def decode(text: str, node_name: str, default_ms: int) -> Batch:
    """A kubelet's `/metrics/resource` as a batch (metrics-server's decodeBatch): a node
    or container without CPU or memory is left out."""
    node: dict[str, int] = {}
    containers: dict[tuple[str, str, str], dict[str, int]] = {}
    for name, labels, value, stamp in samples(text):
        ns = (stamp if stamp is not None else default_ms) * 10**6
        if name == _NODE_CPU:
            node.update(cpu=round(value * 1e9), timestamp=ns)
        elif name == _NODE_MEMORY:
            node.update(memory=int(value), timestamp=ns)
        elif name in (_CONTAINER_CPU, _CONTAINER_MEMORY, _CONTAINER_START):
            key = (labels.get("namespace", ""), labels.get("pod", ""),
                   labels.get("container", ""))
            entry = containers.setdefault(key, {})
            if name == _CONTAINER_CPU:
                entry.update(cpu=round(value * 1e9), timestamp=ns)
            elif name == _CONTAINER_MEMORY:
                entry.update(memory=int(value), timestamp=ns)
            else:
                entry["start"] = round(value * 1e9)
    batch = Batch()
    if node.get("cpu") and node.get("memory"):
        batch.nodes[node_name] = Point(0, node["timestamp"], node["cpu"], node["memory"])
    incomplete: set[tuple[str, str]] = set()
    for (namespace, pod, container), entry in containers.items():
        if not entry.get("cpu") or not entry.get("memory"):
            incomplete.add((namespace, pod))  # upstream drops the whole pod
            continue
        batch.pods.setdefault((namespace, pod), {})[container] = Point(
            entry.get("start", 0), entry["timestamp"], entry["cpu"], entry["memory"])
    for key in incomplete:
        batch.pods.pop(key, None)
    return batch


def usage(last: Point, prev: Point) -> Usage:
    """CPU rate and memory between two points (metrics-server's resourceUsage)."""
    if last.start < prev.start:
        raise ValueError("unexpected decrease in startTime of node/container")
    if last.cpu < prev.cpu:
        raise ValueError("unexpected decrease in cumulative CPU usage value")
    window = last.timestamp - prev.timestamp
    if window <= 0:
        raise ValueError("points without a window between them")
    # whole nanoseconds in, exact integers through: a float rate could come out a nano-core
    # above the truth, and kubectl rounds nano-cores up to the next millicore
    return Usage((last.cpu - prev.cpu) * 10**9 // window, last.memory, last.timestamp, window)


class Points:
    """The last and the previous point of every node and container."""

    def __init__(self, resolution: float = DEFAULT_RESOLUTION):
        self.resolution_ns = int(resolution * 1e9)
        self.last = Batch()
        self.prev = Batch()

    def store(self, batch: Batch) -> None:
        prev_nodes = {}
        for name, new in batch.nodes.items():
            old = self.last.nodes.get(name)
            if old is None:
                continue
            if new.timestamp > old.timestamp:
                prev_nodes[name] = old
            elif name in self.prev.nodes and self.prev.nodes[name].timestamp < new.timestamp:
                prev_nodes[name] = self.prev.nodes[name]
        prev_pods: dict[tuple[str, str], dict[str, Point]] = {}
        for key, containers in batch.pods.items():
            kept: dict[str, Point] = {}
            for name, new in containers.items():
                age = new.timestamp - new.start
                old = self.last.pods.get(key, {}).get(name)
                if new.start < new.timestamp and FRESH_CONTAINER_MIN_NS <= age < \
                        self.resolution_ns:
                    kept[name] = Point(new.start, new.start, 0, new.memory)
                elif old is not None and new.start < old.timestamp:  # not restarted since
                    if new.timestamp > old.timestamp:
                        kept[name] = old
                    else:
                        older = self.prev.pods.get(key, {}).get(name)
                        if older is not None and older.timestamp < new.timestamp:
                            kept[name] = older
            if kept:
                prev_pods[key] = kept
        self.last = batch
        self.prev = Batch(prev_nodes, prev_pods)

    def node(self, name: str) -> Usage | None:
        last, prev = self.last.nodes.get(name), self.prev.nodes.get(name)
        if last is None or prev is None:
            return None
        try:
            return usage(last, prev)
        except ValueError as exc:
            log.warning("skipping node %s usage: %s", name, exc)
            return None

    def pod(self, namespace: str, name: str) -> list[tuple[str, Usage]] | None:
        """Each container's usage; None unless every container has two points."""
        last = self.last.pods.get((namespace, name))
        prev = self.prev.pods.get((namespace, name))
        if last is None or prev is None:
            return None
        out = []
        for container in sorted(last):
            if container not in prev:
                return None
            try:
                out.append((container, usage(last[container], prev[container])))
            except ValueError as exc:
                log.warning("skipping container %s of pod %s/%s: %s", container, namespace,
                            name, exc)
        return out


class Scraper:
    """Scrapes every node's kubelet each `resolution` seconds into `points`."""

    def __init__(self, objects: ObjectStore, nodes: Resource, kubelet: KubeletClient | None,
                 resolution: float = DEFAULT_RESOLUTION):
        self.objects, self.nodes, self.kubelet = objects, nodes, kubelet
        self.resolution = resolution
        self.points = Points(resolution)

    async def run(self) -> None:
        if self.kubelet is None:
            log.warning("metrics: no kubelet client credentials, nothing is scraped")
            return
        timeout = aiohttp.ClientTimeout(total=self.resolution * 0.9)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                started = time.monotonic()
                try:
                    await self.scrape(session)
                except errors.StatusError as exc:  # the store is away: try next time
                    log.warning("metrics: listing nodes: %s", exc)
                await asyncio.sleep(max(self.resolution - (time.monotonic() - started), 0))

    async def scrape(self, session: aiohttp.ClientSession) -> None:
        nodes, _, _ = await self.objects.list(self.nodes, None)
        results = await asyncio.gather(*(self._scrape_node(session, node) for node in nodes))
        self.points.store(_merged(b for b in results if b is not None))

    async def _scrape_node(self, session: aiohttp.ClientSession,
                           node: dict[str, Any]) -> Batch | None:
        name = node["metadata"]["name"]
        base = endpoint(node)
        if base is None:
            return None
        assert self.kubelet is not None
        try:
            async with session.get(f"{base}/metrics/resource", ssl=self.kubelet.ssl) as answer:
                if answer.status != 200:
                    log.warning("metrics: kubelet of node %s answered %d", name,
                                answer.status)
                    return None
                text = await answer.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("metrics: scraping node %s: %s", name, exc or type(exc).__name__)
            return None
        return decode(text, name, math.floor(time.time() * 1000))


def _merged(batches: Iterable[Batch]) -> Batch:
    merged = Batch()
    for batch in batches:
        merged.nodes.update(batch.nodes)
        for key, containers in batch.pods.items():
            merged.pods.setdefault(key, {}).update(containers)
    return merged
