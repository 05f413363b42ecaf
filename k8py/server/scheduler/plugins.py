"""The scheduler's plugins, named and weighted as upstream's default profile.

Filters: NodeName, NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector and
required node affinity), NodePorts, NodeResourcesFit, InterPodAffinity (required affinity and
anti-affinity, the pod's own and existing pods'), PodTopologySpread (DoNotSchedule),
VolumeBinding (the pod's claims exist, immediate ones are bound, bound volumes' node affinity
admits the node; a WaitForFirstConsumer claim of a class without a provisioner needs a free
volume the node can reach).
Scores: NodeResourcesFit (least allocated), NodeResourcesBalancedAllocation, ImageLocality,
NodeAffinity (preferred terms), TaintToleration (PreferNoSchedule), InterPodAffinity
(preferred terms), PodTopologySpread (ScheduleAnyway constraints, or by default spreading
the pods of one controller over nodes, as upstream's system-default constraints do).

Each plugin's `prepare` returns SKIP when the pod gives it nothing to check, so a plain pod
pays only for resource fit, taints and unschedulable nodes. Filter failure texts are
upstream's, as `kubectl describe` shows them.
"""

from __future__ import annotations

import collections
from typing import Any

from k8py.api import selectors
from k8py.server.controllers.persistentvolume import claim_class, mismatch
from k8py.server.scheduler.framework import (SKIP, NodeInfo, Plugin, PodInfo, Snapshot,
                                             normalize_max)

# --- shared matching -------------------------------------------------------------------------


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for toleration in tolerations:
        effect = toleration.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key")
        operator = toleration.get("operator") or "Equal"
        if not key:
            if operator == "Exists":
                return True
            continue
        if key != taint.get("key"):
            continue
        if operator == "Exists" or toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expression_matches(expression: dict[str, Any], value: str | None) -> bool:
    operator, values = expression.get("operator"), expression.get("values") or []
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and values:
        try:
            number, bound = int(value), int(values[0])
        except ValueError:
            return False
        return number > bound if operator == "Gt" else number < bound
    return False


def node_selector_term_matches(term: dict[str, Any], node: NodeInfo) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term matches no node
    for expression in expressions:
        if not _expression_matches(expression, node.labels.get(expression.get("key"))):
            return False
    for expression in fields:
        value = node.name if expression.get("key") == "metadata.name" else None
        if not _expression_matches(expression, value):
            return False
    return True


def node_matches_pod(pod: PodInfo, node: NodeInfo) -> bool:
    """nodeSelector and required node affinity."""
    for key, value in (pod.spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != value:
            return False
    required = (pod.affinity.get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if required:
        terms = required.get("nodeSelectorTerms") or []
        if not any(node_selector_term_matches(t, node) for t in terms):
            return False
    return True


def _term_namespaces(term: dict[str, Any], pod: PodInfo | str) -> set[str] | None:
    """The namespaces a pod (anti-)affinity term of `pod` (or of a pod in that namespace)
    looks in; None: all of them."""
    if term.get("namespaceSelector") == {}:
        return None
    namespace = pod if isinstance(pod, str) else pod.namespace
    return set(term.get("namespaces") or ()) or {namespace}


def _term_matches(term: dict[str, Any], owner: PodInfo, other: PodInfo) -> bool:
    """Whether `other` is a pod `owner`'s term selects."""
    return _term_selects(term, owner.namespace, other)


def _term_selects(term: dict[str, Any], owner_namespace: str, other: PodInfo) -> bool:
    namespaces = _term_namespaces(term, owner_namespace)
    if namespaces is not None and other.namespace not in namespaces:
        return False
    selector = term.get("labelSelector")
    if selector is None:
        return False
    return selectors.selector_matches(selector, other.labels)


def _domains_with_matches(term: dict[str, Any], pod: PodInfo,
                          snapshot: Snapshot) -> collections.Counter:
    """topology value -> how many placed pods the term selects there."""
    key = term.get("topologyKey", "")
    counts: collections.Counter = collections.Counter()
    selector = term.get("labelSelector")
    if selector is None:
        return counts
    for other in snapshot.candidates(_term_namespaces(term, pod), selector):
        if other.key == pod.key or not selectors.selector_matches(selector, other.labels):
            continue
        node = snapshot.nodes.get(other.node_name)
        if node is not None and key in node.labels:
            counts[node.labels[key]] += 1
    return counts


# --- filters -----------------------------------------------------------------------------


class NodeName(Plugin):
    name, filters = "NodeName", True

    def prepare(self, pod, snapshot):
        return pod.spec.get("nodeName") or SKIP

    def filter(self, pod, node, state):
        return None if node.name == state else "node(s) didn't match the requested node name"


class NodeUnschedulable(Plugin):
    name, filters = "NodeUnschedulable", True
    TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}

    def prepare(self, pod, snapshot):
        return tolerates(pod.spec.get("tolerations") or [], self.TAINT)

    def filter(self, pod, node, tolerated):
        if node.unschedulable and not tolerated:
            return "node(s) were unschedulable"
        return None


class TaintToleration(Plugin):
    name, filters, scores, weight = "TaintToleration", True, True, 3

    def prepare(self, pod, snapshot):
        return pod.spec.get("tolerations") or []

    def filter(self, pod, node, tolerations):
        for taint in node.taints:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and \
                    not tolerates(tolerations, taint):
                return (f"node(s) had untolerated taint {{{taint.get('key')}: "
                        f"{taint.get('value', '')}}}")
        return None

    def score(self, pod, node, tolerations):
        return float(sum(1 for taint in node.taints if taint.get("effect") == "PreferNoSchedule"
                         and not tolerates(tolerations, taint)))

    def normalize(self, scores):
        return normalize_max(scores, reverse=True)


class NodeAffinity(Plugin):
    name, filters, scores, weight = "NodeAffinity", True, True, 2

    def prepare(self, pod, snapshot):
        preferred = (pod.affinity.get("nodeAffinity") or {}).get(
            "preferredDuringSchedulingIgnoredDuringExecution") or []
        required = pod.spec.get("nodeSelector") or (pod.affinity.get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution")
        if not preferred and not required:
            return SKIP
        return preferred

    def filter(self, pod, node, preferred):
        if node_matches_pod(pod, node):
            return None
        return "node(s) didn't match Pod's node affinity/selector"

    def score(self, pod, node, preferred):
        return float(sum(term.get("weight", 0) for term in preferred
                         if node_selector_term_matches(term.get("preference") or {}, node)))

    def normalize(self, scores):
        return normalize_max(scores)


class NodePorts(Plugin):
    name, filters = "NodePorts", True

    def prepare(self, pod, snapshot):
        return pod.host_ports or SKIP

    def filter(self, pod, node, ports):
        for protocol, ip, port in ports:
            for (used_protocol, used_ip, used_port), count in node.ports.items():
                if count > 0 and used_port == port and used_protocol == protocol and (
                        ip == used_ip or "0.0.0.0" in (ip, used_ip)):
                    return "node(s) didn't have free ports for the requested pod ports"
        return None


class NodeResourcesFit(Plugin):
    """Requests against allocatable; scores by least allocated (upstream's default)."""
    name, filters, scores, weight = "NodeResourcesFit", True, True, 1

    def prepare(self, pod, snapshot):
        return {name: value for name, value in pod.requests.items() if value > 0}

    def filter(self, pod, node, requests):
        reasons = []
        if node.requested["pods"] + 1 > node.allocatable.get("pods", 110):
            reasons.append("Too many pods")
        for name, value in requests.items():
            if node.requested[name] + value > node.allocatable.get(name, 0):
                reasons.append(f"Insufficient {name}")
        return reasons or None

    def score(self, pod, node, requests):
        total = 0.0
        for used, asked, resource in ((node.score_cpu, pod.score_cpu, "cpu"),
                                      (node.score_memory, pod.score_memory, "memory")):
            capacity = node.allocatable.get(resource, 0)
            if capacity > 0:
                total += max(0.0, (capacity - used - asked) * 100.0 / capacity)
        return total / 2


class BalancedAllocation(Plugin):
    name, scores, weight = "NodeResourcesBalancedAllocation", True, 1

    def score(self, pod, node, state):
        cpu = node.allocatable.get("cpu", 0)
        memory = node.allocatable.get("memory", 0)
        if cpu <= 0 or memory <= 0:
            return 0.0
        cpu_fraction = min(1.0, (node.score_cpu + pod.score_cpu) / cpu)
        memory_fraction = min(1.0, (node.score_memory + pod.score_memory) / memory)
        return (1 - abs(cpu_fraction - memory_fraction) / 2) * 100


class ImageLocality(Plugin):
    name, scores, weight = "ImageLocality", True, 1

    def prepare(self, pod, snapshot):
        images = [c.get("image", "") for c in pod.spec.get("containers") or ()]
        return images if images and any(n.images for n in snapshot.nodes.values()) else SKIP

    def score(self, pod, node, images):
        if not node.images:
            return 0.0
        present = sum(1 for image in images if image in node.images
                      or (":" not in image.rsplit("/", 1)[-1] and f"{image}:latest" in node.images))
        return 100.0 * present / len(images)


class InterPodAffinity(Plugin):
    name, filters, scores, weight = "InterPodAffinity", True, True, 2

    def prepare(self, pod, snapshot):
        affinity = pod.affinity.get("podAffinity") or {}
        anti = pod.affinity.get("podAntiAffinity") or {}
        required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or []
        required_anti = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []
        preferred = [(t.get("weight", 1), t.get("podAffinityTerm") or {})
                     for t in affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
        preferred += [(-t.get("weight", 1), t.get("podAffinityTerm") or {})
                      for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
        # Existing pods whose required anti-affinity selects this pod forbid their domains.
        existing_forbidden: dict[str, set[str]] = {}  # topology key -> forbidden values
        for entry in snapshot.anti_terms.values():
            if not _term_selects(entry.term, entry.namespace, pod):
                continue
            key = entry.term.get("topologyKey", "")
            for node_name in entry.nodes:
                node = snapshot.nodes.get(node_name)
                if node is not None and key in node.labels:
                    existing_forbidden.setdefault(key, set()).add(node.labels[key])
        if not (required or required_anti or preferred or existing_forbidden):
            return SKIP
        affinity_terms = []
        for term in required:
            counts = _domains_with_matches(term, pod, snapshot)
            # The first pod of a group that selects itself may go anywhere.
            alone = not counts and _term_matches(term, pod, pod)
            affinity_terms.append((term.get("topologyKey", ""), counts, alone))
        forbidden: dict[str, set[str]] = {}
        for term in required_anti:
            key = term.get("topologyKey", "")
            forbidden.setdefault(key, set()).update(_domains_with_matches(term, pod, snapshot))
        weighted = [(weight, term.get("topologyKey", ""),
                     _domains_with_matches(term, pod, snapshot)) for weight, term in preferred]
        return affinity_terms, forbidden, existing_forbidden, weighted

    def filter(self, pod, node, state):
        affinity_terms, forbidden, existing_forbidden, _ = state
        # upstream's order: the pod's affinity, its anti-affinity, then existing pods'
        for key, counts, alone in affinity_terms:
            if alone:
                if key not in node.labels:
                    return "node(s) didn't match pod affinity rules"
                continue
            if key not in node.labels or counts.get(node.labels[key], 0) == 0:
                return "node(s) didn't match pod affinity rules"
        for key, values in forbidden.items():
            if node.labels.get(key) in values:
                return "node(s) didn't match pod anti-affinity rules"
        for key, values in existing_forbidden.items():
            if node.labels.get(key) in values:
                return "node(s) didn't satisfy existing pods anti-affinity rules"
        return None

    def score(self, pod, node, state):
        total = 0.0
        for weight, key, counts in state[3]:
            if key in node.labels:
                total += weight * counts.get(node.labels[key], 0)
        return total

    def normalize(self, scores):
        low, high = min(scores.values(), default=0), max(scores.values(), default=0)
        if high == low:
            return {name: 0.0 for name in scores}
        return {name: 100.0 * (value - low) / (high - low) for name, value in scores.items()}


class PodTopologySpread(Plugin):
    """Explicit constraints; without any, pods of one controller are spread over nodes."""
    name, filters, scores, weight = "PodTopologySpread", True, True, 2

    def prepare(self, pod, snapshot):
        constraints = pod.spec.get("topologySpreadConstraints") or []
        if not constraints:
            return ("default", None) if pod.owner_uid else SKIP
        prepared = []
        eligible = [n for n in snapshot.nodes.values() if node_matches_pod(pod, n)]
        for constraint in constraints:
            key = constraint.get("topologyKey", "")
            selector = constraint.get("labelSelector") or {}
            counts: collections.Counter = collections.Counter()
            for node in eligible:
                if key in node.labels:
                    counts.setdefault(node.labels[key], 0)
            for other in snapshot.candidates({pod.namespace}, selector):
                if other.key == pod.key or not selectors.selector_matches(selector, other.labels):
                    continue
                node = snapshot.nodes.get(other.node_name)
                if node is not None and key in node.labels and node.labels[key] in counts:
                    counts[node.labels[key]] += 1
            self_match = 1 if selectors.selector_matches(selector, pod.labels) else 0
            prepared.append((constraint, key, counts, min(counts.values(), default=0),
                             self_match))
        return ("explicit", prepared)

    def filter(self, pod, node, state):
        kind, prepared = state
        if kind == "default":
            return None
        for constraint, key, counts, minimum, self_match in prepared:
            if constraint.get("whenUnsatisfiable", "DoNotSchedule") != "DoNotSchedule":
                continue
            if key not in node.labels:
                return ("node(s) didn't match pod topology spread constraints "
                        "(missing required label)")
            skew = counts.get(node.labels[key], 0) + self_match - minimum
            if skew > constraint.get("maxSkew", 1):
                return "node(s) didn't match pod topology spread constraints"
        return None

    def score(self, pod, node, state):
        kind, prepared = state
        if kind == "default":
            return float(node.owners.get(pod.owner_uid, 0))
        total = 0.0
        for constraint, key, counts, _, _ in prepared:
            if constraint.get("whenUnsatisfiable") == "ScheduleAnyway" and key in node.labels:
                total += counts.get(node.labels[key], 0)
        return total

    def normalize(self, scores):
        return normalize_max(scores, reverse=True)


class VolumeBinding(Plugin):
    name, filters = "VolumeBinding", True
    NO_PROVISIONER = "kubernetes.io/no-provisioner"

    def prepare(self, pod, snapshot):
        names = [v["persistentVolumeClaim"].get("claimName") for v in
                 pod.spec.get("volumes") or () if isinstance(v, dict) and
                 isinstance(v.get("persistentVolumeClaim"), dict)]
        if not names:
            return SKIP
        bound, static = [], []
        for name in names:
            claim = snapshot.claims.get(f"{pod.namespace}/{name}")
            if claim is None:
                return f'persistentvolumeclaim "{name}" not found'
            if claim["metadata"].get("deletionTimestamp"):
                return f'persistentvolumeclaim "{name}" is being deleted'
            volume_name = (claim.get("spec") or {}).get("volumeName")
            if volume_name:
                volume = snapshot.volumes.get(volume_name)
                if volume is None:
                    return "node(s) unavailable due to one or more pvc(s) bound to " \
                        "non-existent pv(s)"
                bound.append(volume)
                continue
            storage_class = snapshot.classes.get(claim_class(claim)) or {}
            if storage_class.get("volumeBindingMode") != "WaitForFirstConsumer":
                return "pod has unbound immediate PersistentVolumeClaims"
            if storage_class.get("provisioner") == self.NO_PROVISIONER:
                static.append([v for v in snapshot.volumes.values()
                               if not (v.get("spec") or {}).get("claimRef") and
                               mismatch(claim, v) is None])
        return bound, static

    def filter(self, pod, node, state):
        if isinstance(state, str):
            return state
        bound, static = state
        for volume in bound:
            if not _volume_admits(volume, node):
                return "node(s) had volume node affinity conflict"
        for candidates in static:
            if not any(_volume_admits(v, node) for v in candidates):
                return "node(s) didn't find available persistent volumes to bind"
        return None


def _volume_admits(volume: dict[str, Any], node: NodeInfo) -> bool:
    required = ((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required")
    if not required:
        return True
    return any(node_selector_term_matches(t, node)
               for t in required.get("nodeSelectorTerms") or ())


def default_plugins() -> list[Plugin]:
    """Upstream's default profile, cheapest filters first."""
    return [NodeName(), NodeUnschedulable(), TaintToleration(), NodeAffinity(), NodePorts(),
            NodeResourcesFit(), VolumeBinding(), InterPodAffinity(), PodTopologySpread(),
            BalancedAllocation(), ImageLocality()]
