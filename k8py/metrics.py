"""Prometheus metrics: counters, gauges and histograms with labels, and the text exposition
format (version 0.0.4) that Prometheus and `prometheus_client`'s parser read.

Written here rather than taken from `prometheus_client`: the server and the agent need a
few families and one output format, and the library's import alone (its registry, its
multiprocess and OpenMetrics machinery) costs more memory than everything here, on small
boards too. Shared by the API server (`server/apiserver/metrics.py`) and the kubelet, so it
sits below both layers.

- A family has a name, a help text, a type and label names; its children are kept by
  label values, created on first use, never removed (the label sets used are few and
  bounded by the code that uses them: verbs, resources, codes).
- `Registry.exposition()` writes the families in registration order, then the ones its
  collectors make at scrape time (gauges read from live state, process figures).
- Numbers are written as Go's client does (`1`, `0.005`, `+Inf`), so the `le` labels of a
  histogram are the same strings upstream's are.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: upstream's buckets for apiserver_request_duration_seconds and etcd_request_duration_seconds
REQUEST_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6,
                   8, 10, 15, 20, 30, 45, 60)


def number(value: float) -> str:
    """A sample value or bucket bound as Go's strconv.FormatFloat(v, 'g', -1, 64) writes it,
    with Prometheus's spelling of the infinities."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values)) + "}"


class Family:
    """A metric family; subclasses say how a child holds its value and how it is written."""

    type = "untyped"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.children: dict[tuple[str, ...], object] = {}

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {_escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.type}"
        for values, child in self.children.items():
            yield from self._sample_lines(values, child)

    def stamp(self, *labels: str, value: float, timestamp_ms: int) -> None:
        """Set a sample read at a known moment: written with that timestamp (the
        kubelet's resource metrics, whose figures are as old as the runtime's reading)."""
        self.children[labels] = (value, timestamp_ms)

    def _sample_lines(self, values: tuple[str, ...], child) -> Iterable[str]:
        if isinstance(child, tuple):
            yield f"{self.name}{_labels(self.label_names, values)} {number(child[0])} {child[1]}"
        else:
            yield f"{self.name}{_labels(self.label_names, values)} {number(child)}"


class Counter(Family):
    type = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.children[labels] = self.children.get(labels, 0.0) + amount


class Gauge(Family):
    type = "gauge"

    def set(self, *labels: str, value: float) -> None:
        self.children[labels] = value

    def add(self, *labels: str, amount: float) -> None:
        self.children[labels] = self.children.get(labels, 0.0) + amount


class _Buckets:
    __slots__ = ("counts", "sum", "count")

    def __init__(self, size: int):
        self.counts = [0] * size  # per bucket, not cumulative: summed when written
        self.sum = 0.0
        self.count = 0


class Histogram(Family):
    type = "histogram"

    def __init__(self, name: str, help: str, labels: Sequence[str] = (),
                 buckets: Sequence[float] = REQUEST_BUCKETS):
        super().__init__(name, help, labels)
        self.bounds = tuple(float(b) for b in buckets)
        self._le = tuple(number(b) for b in self.bounds) + ("+Inf",)

    def observe(self, *labels: str, value: float) -> None:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = _Buckets(len(self.bounds) + 1)
        index = len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                index = i
                break
        child.counts[index] += 1
        child.sum += value
        child.count += 1

    def _sample_lines(self, values: tuple[str, ...], child: _Buckets) -> Iterable[str]:
        names = self.label_names + ("le",)
        cumulative = 0
        for le, count in zip(self._le, child.counts):
            cumulative += count
            yield f"{self.name}_bucket{_labels(names, values + (le,))} {cumulative}"
        plain = _labels(self.label_names, values)
        yield f"{self.name}_sum{plain} {number(child.sum)}"
        yield f"{self.name}_count{plain} {child.count}"


Collector = Callable[[], Iterable[Family]]


class Registry:
    """The families one endpoint serves."""

    def __init__(self) -> None:
        self.families: list[Family] = []
        self.collectors: list[Collector] = []

    def add(self, family: Family) -> Family:
        self.families.append(family)
        return family

    def exposition(self) -> str:
        out: list[str] = []
        for family in self.families:
            out.extend(family.lines())
        for collect in self.collectors:
            for family in collect():
                out.extend(family.lines())
        out.append("")
        return "\n".join(out)


def _process_start_time() -> float:
    """When this process started, in Unix seconds: its start in clock ticks after boot
    (/proc/self/stat) plus the boot time (/proc/stat), as Go's process collector reads it."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
        ticks = int(fields[19])  # field 22, counted after the command's closing parenthesis
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


_START_TIME = _process_start_time()


def process_families() -> list[Family]:
    """Go's process collector's figures for this process, read now."""
    times = os.times()
    cpu = Counter("process_cpu_seconds_total", "Total user and system CPU time spent in "
                  "seconds.")
    cpu.inc(amount=times.user + times.system)
    rss = Gauge("process_resident_memory_bytes", "Resident memory size in bytes.")
    virtual = Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.")
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            size, resident = (int(x) for x in f.read().split()[:2])
        page = os.sysconf("SC_PAGE_SIZE")
        rss.set(value=resident * page)
        virtual.set(value=size * page)
    except (OSError, ValueError):
        pass
    fds = Gauge("process_open_fds", "Number of open file descriptors.")
    try:
        fds.set(value=len(os.listdir("/proc/self/fd")))
    except OSError:
        pass
    max_fds = Gauge("process_max_fds", "Maximum number of open file descriptors.")
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    max_fds.set(value=float("inf") if soft == resource.RLIM_INFINITY else soft)
    start = Gauge("process_start_time_seconds", "Start time of the process since unix epoch "
                  "in seconds.")
    start.set(value=_START_TIME)
    return [cpu, fds, max_fds, rss, start, virtual]
