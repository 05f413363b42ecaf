"""The scheduling framework: the cluster as the scheduler sees it, and one scheduling cycle.

Pure: no I/O. `Snapshot` holds a `NodeInfo` per node (its labels, taints, allocatable, and
the pods on it with their summed requests and host ports), kept current by the scheduler from
its informers and by "assuming" pods it has just placed before their binding is visible.
`PodInfo` is what plugins read of a pod, computed once per pod.

A cycle (`schedule`) is upstream's: every plugin's `prepare` builds per-cycle state (and says
whether the plugin has anything to check for this pod); filters run node by node, starting
after the node where the last cycle stopped, until enough feasible nodes are found
(upstream's percentageOfNodesToScore: 50% minus 1% per 125 nodes, at least 5% and at least
100 nodes); scores (0–100 each, weighted) rank the feasible ones and the best wins, ties
broken at random. When no node fits, the result counts the filters' reasons per node, from
which the scheduler writes upstream's "0/3 nodes are available: ..." message.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import random
from typing import Any

from k8py.api import quantity

DEFAULT_CPU_REQUEST = 100  # millicores; what scoring assumes for a container without requests
DEFAULT_MEMORY_REQUEST = 200 * 2 ** 20
MIN_FEASIBLE_NODES = 100


def _container_requests(container: dict[str, Any]) -> dict[str, int]:
    resources = container.get("resources") or {}
    requests = dict(resources.get("limits") or {})
    requests.update(resources.get("requests") or {})
    out = {}
    for name, value in requests.items():
        try:
            out[name] = quantity.amount(name, value)
        except ValueError:
            continue
    return out


def pod_requests(spec: dict[str, Any]) -> dict[str, int]:
    """What a pod asks for: the sum over containers, at least the largest init container,
    plus the pod's overhead (upstream's resource.PodRequests)."""
    total: dict[str, int] = collections.Counter()
    for container in spec.get("containers") or ():
        total.update(_container_requests(container))
    for container in spec.get("initContainers") or ():
        for name, value in _container_requests(container).items():
            if container.get("restartPolicy") == "Always":  # a sidecar runs alongside
                total[name] += value
            elif value > total.get(name, 0):
                total[name] = value
    for name, value in (spec.get("overhead") or {}).items():
        try:
            total[name] += quantity.amount(name, value)
        except ValueError:
            continue
    return dict(total)


@dataclasses.dataclass(eq=False)
class PodInfo:
    """A pod as plugins read it."""
    key: str
    namespace: str
    name: str
    labels: dict[str, str]
    spec: dict[str, Any]
    requests: dict[str, int]
    #: requests with upstream's non-zero defaults, for scoring
    score_cpu: int
    score_memory: int
    host_ports: list[tuple[str, str, int]]  # (protocol, hostIP, port)
    owner_uid: str | None
    uid: str = ""
    node_name: str = ""

    @classmethod
    def of(cls, pod: dict[str, Any]) -> "PodInfo":
        metadata, spec = pod["metadata"], pod.get("spec") or {}
        requests = pod_requests(spec)
        score_cpu = score_memory = 0
        for container in spec.get("containers") or ():
            asked = _container_requests(container)
            score_cpu += asked.get("cpu") or DEFAULT_CPU_REQUEST
            score_memory += asked.get("memory") or DEFAULT_MEMORY_REQUEST
        ports = [(p.get("protocol", "TCP"), p.get("hostIP") or "0.0.0.0", p["hostPort"])
                 for c in spec.get("containers") or () for p in c.get("ports") or ()
                 if p.get("hostPort")]
        owner = next((r["uid"] for r in metadata.get("ownerReferences") or ()
                      if r.get("controller")), None)
        namespace = metadata.get("namespace", "default")
        return cls(f"{namespace}/{metadata['name']}", namespace, metadata["name"],
                   metadata.get("labels") or {}, spec, requests, score_cpu, score_memory,
                   ports, owner, metadata.get("uid", ""), spec.get("nodeName") or "")

    @property
    def affinity(self) -> dict[str, Any]:
        return self.spec.get("affinity") or {}


class NodeInfo:
    """A node and what is placed on it."""

    def __init__(self, node: dict[str, Any]):
        self.pods: dict[str, PodInfo] = {}
        self.requested: dict[str, int] = collections.Counter()
        self.score_cpu = self.score_memory = 0
        self.ports: collections.Counter = collections.Counter()
        self.owners: collections.Counter = collections.Counter()  # controller uid -> pods
        self.set_node(node)

    def set_node(self, node: dict[str, Any]) -> None:
        self.node = node
        self.name = node["metadata"]["name"]
        self.labels = node["metadata"].get("labels") or {}
        spec, status = node.get("spec") or {}, node.get("status") or {}
        self.unschedulable = bool(spec.get("unschedulable"))
        self.taints = spec.get("taints") or []
        allocatable = status.get("allocatable") or status.get("capacity") or {}
        self.allocatable = {}
        for name, value in allocatable.items():
            try:
                self.allocatable[name] = quantity.amount(name, value)
            except ValueError:
                continue
        self.images = {name for image in status.get("images") or ()
                       for name in image.get("names") or ()}

    def add(self, pod: PodInfo) -> None:
        if pod.key in self.pods:
            self.remove(pod.key)
        self.pods[pod.key] = pod
        self.requested.update(pod.requests)
        self.requested["pods"] += 1
        self.score_cpu += pod.score_cpu
        self.score_memory += pod.score_memory
        self.ports.update(pod.host_ports)
        if pod.owner_uid:
            self.owners[pod.owner_uid] += 1

    def remove(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        if pod is not None:
            self.requested.subtract(pod.requests)
            self.requested["pods"] -= 1
            self.score_cpu -= pod.score_cpu
            self.score_memory -= pod.score_memory
            self.ports.subtract(pod.host_ports)
            if pod.owner_uid:
                self.owners[pod.owner_uid] -= 1
        return pod


def _required_anti_affinity(pod: PodInfo) -> list[dict[str, Any]]:
    return (pod.affinity.get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution") or []


@dataclasses.dataclass
class AntiAffinityTerm:
    term: dict[str, Any]
    namespace: str  # of the pods carrying it: the term's default namespace
    nodes: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class Snapshot:
    """Every node, and where every scheduled pod is."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.placed: dict[str, PodInfo] = {}  # pod key -> pod, with node_name set
        #: placed pods' required anti-affinity terms, one entry per distinct term (replicas
        #: share theirs), with the nodes of the pods carrying it: they constrain later pods
        self.anti_terms: dict[tuple[str, str], AntiAffinityTerm] = {}
        #: (namespace, label, value) -> placed pods carrying it, for selectors' candidates
        self.by_label: dict[tuple[str, str, str], dict[str, PodInfo]] = {}
        #: storage, by key ("ns/name" claims, named volumes and classes), for VolumeBinding
        self.claims: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.classes: dict[str, dict[str, Any]] = {}

    def set_node(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(node)
            for pod in self.placed.values():  # pods seen before their node
                if pod.node_name == name:
                    info.add(pod)
        else:
            info.set_node(node)

    def remove_node(self, name: str) -> None:
        self.nodes.pop(name, None)

    def place(self, pod: PodInfo, node_name: str) -> None:
        self.unplace(pod.key)
        info = self.nodes.get(node_name)
        pod.node_name = node_name
        self.placed[pod.key] = pod
        for label, value in pod.labels.items():
            self.by_label.setdefault((pod.namespace, label, value), {})[pod.key] = pod
        if info is not None:
            info.add(pod)
        for term in _required_anti_affinity(pod):
            key = (pod.namespace, json.dumps(term, sort_keys=True))
            entry = self.anti_terms.get(key)
            if entry is None:
                entry = self.anti_terms[key] = AntiAffinityTerm(term, pod.namespace)
            entry.nodes[node_name] += 1

    def unplace(self, key: str) -> None:
        pod = self.placed.pop(key, None)
        if pod is not None:
            if pod.node_name in self.nodes:
                self.nodes[pod.node_name].remove(key)
            for term in _required_anti_affinity(pod):
                term_key = (pod.namespace, json.dumps(term, sort_keys=True))
                entry = self.anti_terms.get(term_key)
                if entry is not None:
                    entry.nodes[pod.node_name] -= 1
                    if entry.nodes[pod.node_name] <= 0:
                        del entry.nodes[pod.node_name]
                    if not entry.nodes:
                        del self.anti_terms[term_key]
            for label, value in pod.labels.items():
                bucket = self.by_label.get((pod.namespace, label, value))
                if bucket is not None:
                    bucket.pop(key, None)
                    if not bucket:
                        del self.by_label[(pod.namespace, label, value)]

    def candidates(self, namespaces: set[str] | None, selector: dict[str, Any]):
        """Placed pods that may match `selector` in `namespaces` (None: all): narrowed by
        one of its matchLabels when it has any; callers still test the whole selector."""
        match_labels = selector.get("matchLabels") or {}
        if match_labels and namespaces is not None:
            label, value = next(iter(match_labels.items()))
            for namespace in namespaces:
                yield from self.by_label.get((namespace, label, value), {}).values()
            return
        for pod in self.placed.values():
            if namespaces is None or pod.namespace in namespaces:
                yield pod


class Plugin:
    """A filter and/or score plugin. `prepare` returns the per-cycle state the plugin's
    `filter` and `score` take, or `SKIP` when the plugin has nothing to check for this pod."""
    name = "Plugin"
    filters = False
    scores = False
    weight = 1

    def prepare(self, pod: PodInfo, snapshot: Snapshot) -> Any:
        return None

    def filter(self, pod: PodInfo, node: NodeInfo, state: Any) -> str | list[str] | None:
        """None if the pod may run on the node; otherwise why not (upstream's wording),
        several reasons as a list."""
        return None

    def score(self, pod: PodInfo, node: NodeInfo, state: Any) -> float:
        return 0.0

    def normalize(self, scores: dict[str, float]) -> dict[str, float]:
        return scores


SKIP = object()


def normalize_max(scores: dict[str, float], reverse: bool = False) -> dict[str, float]:
    """Scale to 0..100 by the highest score (reverse: the lowest raw score gets 100)."""
    highest = max(scores.values(), default=0)
    if highest <= 0:
        return {name: (100.0 if reverse else 0.0) for name in scores}
    if reverse:
        return {name: 100.0 * (highest - value) / highest for name, value in scores.items()}
    return {name: 100.0 * value / highest for name, value in scores.items()}


@dataclasses.dataclass
class Result:
    node: str | None
    evaluated: int
    feasible: int
    reasons: collections.Counter  # reason -> number of nodes it ruled out


def feasible_target(total: int) -> int:
    """How many feasible nodes are enough to pick from (upstream's adaptive percentage)."""
    if total <= MIN_FEASIBLE_NODES:
        return total
    percentage = max(5, 50 - total // 125)
    return max(MIN_FEASIBLE_NODES, total * percentage // 100)


class Framework:
    def __init__(self, plugins: list[Plugin]):
        self.plugins = plugins
        self._next_start = 0

    def schedule(self, pod: PodInfo, snapshot: Snapshot) -> Result:
        states = []
        for plugin in self.plugins:
            state = plugin.prepare(pod, snapshot)
            states.append((plugin, state))
        filters = [(p, s) for p, s in states if p.filters and s is not SKIP]
        scorers = [(p, s) for p, s in states if p.scores and s is not SKIP]
        nodes = list(snapshot.nodes.values())
        total = len(nodes)
        wanted = feasible_target(total)
        reasons: collections.Counter = collections.Counter()
        feasible: list[NodeInfo] = []
        start = self._next_start % total if total else 0
        evaluated = 0
        for offset in range(total):
            node = nodes[(start + offset) % total]
            evaluated += 1
            for plugin, state in filters:
                reason = plugin.filter(pod, node, state)
                if reason is not None:
                    if isinstance(reason, str):
                        reasons[reason] += 1
                    else:
                        reasons.update(reason)
                    break
            else:
                feasible.append(node)
                if len(feasible) >= wanted:
                    break
        self._next_start = start + evaluated
        if not feasible:
            return Result(None, evaluated, 0, reasons)
        if len(feasible) == 1 or not scorers:
            chosen = feasible[0] if len(feasible) == 1 else random.choice(feasible)
            return Result(chosen.name, evaluated, len(feasible), reasons)
        totals = dict.fromkeys((n.name for n in feasible), 0.0)
        for plugin, state in scorers:
            raw = {n.name: plugin.score(pod, n, state) for n in feasible}
            for name, value in plugin.normalize(raw).items():
                totals[name] += value * plugin.weight
        best = max(totals.values())
        winners = [name for name, value in totals.items() if value == best]
        return Result(random.choice(winners), evaluated, len(feasible), reasons)


def unschedulable_message(result: Result, total_nodes: int) -> str:
    """Upstream's FitError text: `0/3 nodes are available: 1 node(s) had untolerated taint
    {k: v}, 2 Insufficient cpu.` (reason strings sorted)."""
    if total_nodes == 0:
        return "no nodes available to schedule pods"
    parts = sorted(f"{count} {reason}" for reason, count in result.reasons.items())
    return f"0/{total_nodes} nodes are available: {', '.join(parts)}."
