"""What objects cost a ResourceQuota: upstream's quota evaluators (pkg/quota/v1/evaluator/core
and the generic object counter of apiserver's quota/v1/generic), pure functions of objects.

An `Evaluator` per resource says
- which admission operations can change usage (`handles`),
- which of a quota's resource names it accounts for (`matching_resources`),
- whether an object is inside a quota's scopes (`matches_scope`; only pods have scopes:
  Terminating, NotTerminating, BestEffort, NotBestEffort, PriorityClass,
  CrossNamespacePodAffinity; for other kinds a scoped quota never matches),
- what a quota requires of the object (`constraints`: cpu and memory quotas make every
  container state them, upstream's backward-compatible rule),
- what one object uses (`usage`), and whether an update gives usage back (`releases`: the
  controller recomputes then, as upstream's replenishment does).
Pods charge `pods`, `cpu`/`memory` (= requests), `requests.*`, `limits.*`, hugepages and
extended resources, not once finished (Succeeded/Failed, or deleted past their grace
period), but `count/pods` always; Services `services`, `services.loadbalancers`,
`services.nodeports`; PersistentVolumeClaims `persistentvolumeclaims`, `requests.storage`
and both per storage class (`<class>.storageclass.storage.k8s.io/<name>`); every other
resource `count/<resource>[.<group>]` (plus the legacy names `configmaps`, `secrets`,
`resourcequotas`, `replicationcontrollers`), charged on create only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from k8py.api import qos, resourcelists, timestamps
from k8py.api.quantity import Quantity
from k8py.api.resourcelists import ResourceList

Obj = Mapping[str, Any]
CREATE, UPDATE = "CREATE", "UPDATE"
ONE = Quantity(1)
ZERO = Quantity(0)

# never counted (upstream's quota install: virtual resources and events)
IGNORED = frozenset({
    ("", "bindings"), ("", "componentstatuses"), ("", "events"),
    ("authentication.k8s.io", "tokenreviews"), ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "localsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
})
LEGACY_COUNT_NAMES = {"configmaps": "configmaps", "secrets": "secrets",
                      "resourcequotas": "resourcequotas",
                      "replicationcontrollers": "replicationcontrollers"}
STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"


def count_name(group: str, plural: str) -> str:
    return f"count/{plural}.{group}" if group else f"count/{plural}"


def scope_selectors(quota: Obj) -> list[dict[str, Any]]:
    """A quota's scopes as selector requirements: spec.scopes (Exists) and scopeSelector."""
    spec = quota.get("spec") or {}
    selectors = [{"scopeName": scope, "operator": "Exists"} for scope in spec.get("scopes") or ()]
    selectors += ((spec.get("scopeSelector") or {}).get("matchExpressions") or [])
    return selectors


class Evaluator:
    """The generic object counter; the kinds with more to count subclass it."""

    def __init__(self, group: str, plural: str, alias: str = ""):
        self.group, self.plural = group, plural
        self.names = [count_name(group, plural)] + ([alias] if alias else [])

    def handles(self, operation: str, subresource: str | None) -> bool:
        return operation == CREATE and not subresource

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        return [name for name in names if name in self.names]

    def matches_scope(self, selector: Obj, obj: Obj) -> bool:
        return False

    def constraints(self, required: list[str], obj: Obj) -> str | None:
        return None

    def usage(self, obj: Obj, now: float | None = None) -> ResourceList:
        return {name: ONE for name in self.names}

    def releases(self, old: Obj, new: Obj) -> bool:
        return False

    def matches(self, quota: Obj, obj: Obj) -> bool:
        """The quota limits something this evaluator counts and its scopes take obj in."""
        hard = (quota.get("status") or {}).get("hard") or {}
        if not self.matching_resources(hard):
            return False
        return all(self.matches_scope(selector, obj) for selector in scope_selectors(quota))


# --- pods ---------------------------------------------------------------------------------

POD_RESOURCES = ("count/pods", "cpu", "memory", "ephemeral-storage", "requests.cpu",
                 "requests.memory", "requests.ephemeral-storage", "limits.cpu",
                 "limits.memory", "limits.ephemeral-storage", "pods")
# it was a mistake, upstream says, but quotas on these make every container state them
VALIDATION_SET = frozenset({"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu",
                            "limits.memory"})
_QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def _extended(name: str) -> bool:
    return not _native(name) and not name.startswith("requests.") and \
        bool(_QUALIFIED.match(name))


def compute_usage(requests: ResourceList, limits: ResourceList) -> ResourceList:
    """podComputeUsageHelper: a pod's (or a container's) compute usage."""
    result: ResourceList = {"pods": ONE}
    for name in ("cpu", "memory", "ephemeral-storage"):
        if name in requests:
            result[name] = result[f"requests.{name}"] = requests[name]
        if name in limits:
            result[f"limits.{name}"] = limits[name]
    for name, value in requests.items():
        if name.startswith("hugepages-"):
            result[name] = result[f"requests.{name}"] = value
        if _extended(name):
            result[f"requests.{name}"] = value
    return result


def counts_for_quota(pod: Obj, now: float | None = None) -> bool:
    """QuotaV1Pod: not finished, and not deleted past its grace period (a lost node)."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    metadata = pod.get("metadata") or {}
    deleted = timestamps.parse(metadata.get("deletionTimestamp"))
    grace = metadata.get("deletionGracePeriodSeconds")
    if deleted is not None and isinstance(grace, int):
        return (now if now is not None else time.time()) <= deleted + grace
    return True


def _cross_namespace(pod: Obj) -> bool:
    affinity = (pod.get("spec") or {}).get("affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        rules = affinity.get(kind) or {}
        terms = list(rules.get("requiredDuringSchedulingIgnoredDuringExecution") or ())
        terms += [w.get("podAffinityTerm") or {} for w in
                  rules.get("preferredDuringSchedulingIgnoredDuringExecution") or ()]
        if any(t.get("namespaces") or t.get("namespaceSelector") is not None for t in terms):
            return True
    return False


def _selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A scope selector requirement as a label requirement on {scopeName: value}."""
    key, operator = selector.get("scopeName", ""), selector.get("operator", "")
    values = selector.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False


class PodEvaluator(Evaluator):
    def __init__(self):
        super().__init__("", "pods")

    def handles(self, operation: str, subresource: str | None) -> bool:
        if subresource and subresource != "resize":
            return False
        return operation == CREATE or (operation == UPDATE and subresource == "resize")

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        result = []
        for name in names:
            if name in POD_RESOURCES or name.startswith(("hugepages-", "requests.hugepages-")) \
                    or (not _native(name) and name.startswith("requests.")):
                result.append(name)
        return result

    def matches_scope(self, selector: Obj, obj: Obj) -> bool:
        spec = obj.get("spec") or {}
        scope = selector.get("scopeName")
        if scope in ("Terminating", "NotTerminating"):
            deadline = spec.get("activeDeadlineSeconds")
            terminating = isinstance(deadline, int) and deadline >= 0
            return terminating == (scope == "Terminating")
        if scope in ("BestEffort", "NotBestEffort"):
            best_effort = qos.pod_qos_class(spec) == "BestEffort"
            return best_effort == (scope == "BestEffort")
        if scope == "PriorityClass":
            name = spec.get("priorityClassName") or ""
            if selector.get("operator") == "Exists":
                return bool(name)
            return _selector_matches(selector, {"PriorityClass": name} if name else {})
        if scope == "CrossNamespacePodAffinity":
            return _cross_namespace(obj)
        return False

    def constraints(self, required: list[str], obj: Obj) -> str | None:
        wanted = set(required) & VALIDATION_SET
        missing: dict[str, set[str]] = {}
        spec = obj.get("spec") or {}
        for container in list(spec.get("containers") or ()) + list(spec.get("initContainers") or ()):
            resources = container.get("resources") or {}
            have = compute_usage(resourcelists.read(resources.get("requests")),
                                 resourcelists.read(resources.get("limits")))
            for name in wanted - have.keys():
                missing.setdefault(name, set()).add(container.get("name", ""))
        if not missing:
            return None
        return "must specify " + "; ".join(f"{name} for: {','.join(sorted(missing[name]))}"
                                           for name in sorted(missing))

    def usage(self, obj: Obj, now: float | None = None) -> ResourceList:
        result: ResourceList = {"count/pods": ONE}
        if not counts_for_quota(obj, now):
            return result
        return resourcelists.add(result, compute_usage(resourcelists.pod_requests(obj),
                                                       resourcelists.pod_limits(obj)))

    def releases(self, old: Obj, new: Obj) -> bool:
        return counts_for_quota(old) and not counts_for_quota(new)


# --- services -----------------------------------------------------------------------------

SERVICE_RESOURCES = ("count/services", "services", "services.nodeports",
                     "services.loadbalancers")


def quota_service_type(service: Obj) -> str:
    kind = (service.get("spec") or {}).get("type", "")
    return kind if kind in ("NodePort", "LoadBalancer") else ""


class ServiceEvaluator(Evaluator):
    def __init__(self):
        super().__init__("", "services")
        self.names = list(SERVICE_RESOURCES)

    def handles(self, operation: str, subresource: str | None) -> bool:
        return operation in (CREATE, UPDATE) and not subresource

    def usage(self, obj: Obj, now: float | None = None) -> ResourceList:
        spec = obj.get("spec") or {}
        ports = spec.get("ports") or []
        result = {"count/services": ONE, "services": ONE, "services.loadbalancers": ZERO,
                  "services.nodeports": ZERO}
        kind = spec.get("type")
        if kind == "NodePort":
            result["services.nodeports"] = Quantity(len(ports))
        elif kind == "LoadBalancer":
            if spec.get("allocateLoadBalancerNodePorts") is False:
                result["services.nodeports"] = Quantity(
                    sum(1 for p in ports if isinstance(p, Mapping) and p.get("nodePort")))
            else:
                result["services.nodeports"] = Quantity(len(ports))
            result["services.loadbalancers"] = ONE
        return result

    def releases(self, old: Obj, new: Obj) -> bool:
        return quota_service_type(old) != quota_service_type(new)


# --- persistent volume claims -------------------------------------------------------------

PVC_RESOURCES = ("persistentvolumeclaims", "requests.storage")


def storage_class_of(claim: Obj) -> str:
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    if "volume.beta.kubernetes.io/storage-class" in annotations:
        return annotations["volume.beta.kubernetes.io/storage-class"]
    return (claim.get("spec") or {}).get("storageClassName") or ""


class ClaimEvaluator(Evaluator):
    def __init__(self):
        super().__init__("", "persistentvolumeclaims")

    def handles(self, operation: str, subresource: str | None) -> bool:
        return operation in (CREATE, UPDATE) and not subresource

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        return [name for name in names
                if name == "count/persistentvolumeclaims" or name in PVC_RESOURCES
                or any(name.endswith(STORAGE_CLASS_SUFFIX + r) for r in PVC_RESOURCES)]

    def usage(self, obj: Obj, now: float | None = None) -> ResourceList:
        result = {"persistentvolumeclaims": ONE, "count/persistentvolumeclaims": ONE}
        storage_class = storage_class_of(obj)
        if storage_class:
            result[storage_class + STORAGE_CLASS_SUFFIX + "persistentvolumeclaims"] = ONE
        requests = resourcelists.read(((obj.get("spec") or {}).get("resources") or {})
                                      .get("requests"))
        if "storage" in requests:
            stored = requests["storage"]
            # whole bytes (upstream rounds storage requests up, issue 94313)
            if stored.value.denominator != 1:
                stored = Quantity(stored.whole(), stored.format)
            result["requests.storage"] = stored
            if storage_class:
                result[storage_class + STORAGE_CLASS_SUFFIX + "requests.storage"] = stored
        return result


# --- the registry -------------------------------------------------------------------------

_CORE: dict[tuple[str, str], Evaluator] = {
    ("", "pods"): PodEvaluator(),
    ("", "services"): ServiceEvaluator(),
    ("", "persistentvolumeclaims"): ClaimEvaluator(),
    **{("", plural): Evaluator("", plural, alias) for plural, alias in LEGACY_COUNT_NAMES.items()},
}
_COUNTERS: dict[tuple[str, str], Evaluator] = {}


def evaluator_for(group: str, plural: str) -> Evaluator | None:
    """The evaluator of a resource (an object counter for any without its own); None for
    the resources quota ignores."""
    if (group, plural) in IGNORED:
        return None
    evaluator = _CORE.get((group, plural)) or _COUNTERS.get((group, plural))
    if evaluator is None:
        evaluator = _COUNTERS[(group, plural)] = Evaluator(group, plural)
    return evaluator


def counted_resource(name: str) -> tuple[str, str] | None:
    """(group, plural) of a `count/<plural>[.<group>]` name."""
    if not name.startswith("count/"):
        return None
    plural, _, group = name[len("count/"):].partition(".")
    return (group, plural) if plural else None


def evaluators_for(names: Iterable[str]) -> list[Evaluator]:
    """The evaluators that may count any of a quota's resource names: the core ones and a
    counter for every `count/` name."""
    result = list(_CORE.values())
    for name in names:
        resource = counted_resource(name)
        if resource is not None and resource not in _CORE:
            evaluator = evaluator_for(*resource)
            if evaluator is not None and evaluator not in result:
                result.append(evaluator)
    return result


Lister = Callable[[str, str, str], list[Obj] | None]


def calculate_usage(quota: Obj, namespace: str, list_objects: Lister,
                    now: float | None = None) -> tuple[ResourceList, set[str]]:
    """(usage, names measured) for a quota's spec.hard over the namespace's objects
    (upstream's CalculateUsage). `list_objects(group, plural, namespace)` answers None for a
    resource it cannot list; the names of that resource are then not measured."""
    hard = resourcelists.read((quota.get("spec") or {}).get("hard"))
    selectors = scope_selectors(quota)
    usage: ResourceList = {}
    measured: set[str] = set()
    for evaluator in evaluators_for(hard):
        names = evaluator.matching_resources(hard)
        if not names:
            continue
        items = list_objects(evaluator.group, evaluator.plural, namespace)
        if items is None:
            continue
        total: ResourceList = {name: ZERO for name in names}
        for item in items:
            if all(evaluator.matches_scope(s, item) for s in selectors):
                total = resourcelists.add(total, evaluator.usage(item, now))
        usage = resourcelists.add(usage, resourcelists.mask(total, names))
        measured.update(names)
    return usage, measured


# --- validation of ResourceQuotas (a part of upstream's ValidateResourceQuota) --------------

_STANDARD_QUOTA = frozenset({
    "pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
    "persistentvolumeclaims", "services.nodeports", "services.loadbalancers", "cpu", "memory",
    "ephemeral-storage", "requests.cpu", "requests.memory", "requests.storage",
    "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage"})
_STANDARD = _STANDARD_QUOTA | {"storage"}


def validation_causes(obj: Obj, old: Obj | None = None) -> list[tuple[str, str, str]]:
    """spec.hard: names standard for quota (or qualified, with a `/`), values not negative."""
    causes = []
    hard = (obj.get("spec") or {}).get("hard") or {}
    for name, value in hard.items() if isinstance(hard, Mapping) else ():
        field = f"spec.hard[{name}]"
        if "/" not in name:
            hugepages = name.startswith(("hugepages-", "requests.hugepages-"))
            if name not in _STANDARD and not name.startswith("hugepages-"):
                causes.append((field, "FieldValueInvalid", f'Invalid value: "{name}": must be '
                               "a standard resource type or fully qualified"))
            if name not in _STANDARD_QUOTA and not hugepages:
                causes.append((field, "FieldValueInvalid", f'Invalid value: "{name}": must be '
                               "a standard resource for quota"))
        try:
            quantity = Quantity.parse(value)
        except (ValueError, TypeError):
            continue  # the schema refused it already
        if quantity.sign() < 0:
            causes.append((field, "FieldValueInvalid",
                           f'Invalid value: "{quantity}": must be greater than or equal to 0'))
    return causes
