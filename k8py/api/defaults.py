"""Upstream's defaulting for the built-in kinds, applied on create and update.

Each kind's defaults are one small function of the object (a pure copy-in, copy-out), looked
up by (group, plural): the values upstream's `SetDefaults_*` functions fill in, so a stored
object reads back as it would from upstream (pods' restart, DNS and pull policies, grace
period, scheduler, and the not-ready/unreachable NoExecute tolerations of upstream's
DefaultTolerationSeconds admission; workloads' replicas, strategies and history limits;
services' type, protocols and target ports; jobs' parallelism, completions and backoff;
secrets' stringData; namespaces' finalizer and phase; CRDs' status; LimitRanges' container
defaults, `limitranges.default_limit_range`). Kinds not listed are
stored as sent.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from k8py.api import conversion, limitranges
from k8py.api.jsondoc import clone
from k8py.api.resources import Resource
from k8py.api.timestamps import now

Obj = dict[str, Any]


def _secret(obj: Obj) -> Obj:
    # stringData is a write-only convenience: merged into data, base64-encoded, then dropped.
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {}) or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
    obj.setdefault("type", "Opaque")
    return obj


def _namespace(obj: Obj) -> Obj:
    name = obj["metadata"].get("name", "")
    labels = obj["metadata"].setdefault("labels", {}) or {}
    labels["kubernetes.io/metadata.name"] = name
    obj["metadata"]["labels"] = labels
    spec = obj.setdefault("spec", {}) or {}
    spec.setdefault("finalizers", ["kubernetes"])
    obj["spec"] = spec
    status = obj.setdefault("status", {}) or {}
    status.setdefault("phase", "Active")
    obj["status"] = status
    return obj


def _crd(obj: Obj) -> Obj:
    # Upstream's apiextensions controllers accept the names and establish the CRD at once
    # when nothing conflicts; k8py does it on write, so clients never wait for it.
    spec = obj.get("spec") or {}
    status = obj.setdefault("status", {}) or {}
    status["acceptedNames"] = spec.get("names") or {}
    status["storedVersions"] = sorted(
        {v["name"] for v in spec.get("versions") or [] if v.get("storage")}
        | set(status.get("storedVersions") or []))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    for kind, reason, message in (
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ):
        conditions.setdefault(kind, {"type": kind, "status": "True", "reason": reason,
                                     "message": message, "lastTransitionTime": now()})
    status["conditions"] = list(conditions.values())
    obj["status"] = status
    return obj


def _container(c: Obj) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if "imagePullPolicy" not in c:
        image = c.get("image") or ""
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
        c["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if isinstance(c.get(probe), dict):
            p = c[probe]
            for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10),
                               ("successThreshold", 1), ("failureThreshold", 3)):
                p.setdefault(key, value)
            if isinstance(p.get("httpGet"), dict):
                p["httpGet"].setdefault("path", "/")
                p["httpGet"].setdefault("scheme", "HTTP")


def _pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    if spec.get("serviceAccount") and not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    if spec.get("serviceAccountName"):
        # upstream serves the deprecated field as a copy of the current one (conversion)
        spec["serviceAccount"] = spec["serviceAccountName"]
    for c in ((spec.get("initContainers") or []) + (spec.get("containers") or [])
              + (spec.get("ephemeralContainers") or [])):
        if isinstance(c, dict):
            _container(c)


def _template(obj: Obj) -> Obj | None:
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        _pod_spec(template["spec"])
        return template
    return None


# Upstream's DefaultTolerationSeconds admission: every pod tolerates a not-ready or
# unreachable node for this long before the taint manager evicts it.
DEFAULT_TOLERATION_SECONDS = 300
NODE_NOT_READY = "node.kubernetes.io/not-ready"
NODE_UNREACHABLE = "node.kubernetes.io/unreachable"


def _default_tolerations(spec: Obj) -> None:
    tolerations = spec.get("tolerations")
    if tolerations is not None and not isinstance(tolerations, list):
        return
    tolerations = list(tolerations or [])
    for key in (NODE_NOT_READY, NODE_UNREACHABLE):
        if not any(isinstance(t, dict) and t.get("key", "") in (key, "")
                   and t.get("effect", "") in ("NoExecute", "") for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS})
    spec["tolerations"] = tolerations


def _requests_from_limits(spec: Obj) -> None:
    """Upstream's SetDefaults_Pod: a container that limits a resource and does not request
    it requests its limit (pods only; templates keep what was written)."""
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        resources = c.get("resources") if isinstance(c, dict) else None
        if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
            requests = resources.get("requests")
            requests = dict(requests) if isinstance(requests, dict) else {}
            for name, value in resources["limits"].items():
                requests.setdefault(name, value)
            resources["requests"] = requests


def _pod(obj: Obj) -> Obj:
    if isinstance(obj.get("spec"), dict):
        _pod_spec(obj["spec"])
        _requests_from_limits(obj["spec"])
        obj["spec"].setdefault("enableServiceLinks", True)
        _default_tolerations(obj["spec"])
    return obj


def _workload(replicas: bool = True, history: bool = True):
    def defaulter(obj: Obj) -> Obj:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return obj
        _template(obj)
        if replicas:
            spec.setdefault("replicas", 1)
        if history:
            spec.setdefault("revisionHistoryLimit", 10)
        return obj
    return defaulter


def _replication_controller(obj: Obj) -> Obj:
    """Upstream: a missing selector, and missing labels, are the template's labels."""
    obj = _workload(history=False)(obj)
    spec = obj.get("spec")
    if isinstance(spec, dict):
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if labels and not spec.get("selector"):
            spec["selector"] = dict(labels)
        metadata = obj.setdefault("metadata", {})
        if labels and not metadata.get("labels"):
            metadata["labels"] = dict(labels)
    return obj


def _deployment(obj: Obj) -> Obj:
    obj = _workload()(obj)
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
    return obj


def _statefulset(obj: Obj) -> Obj:
    obj = _workload()(obj)
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("podManagementPolicy", "OrderedReady")
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
        spec.setdefault("persistentVolumeClaimRetentionPolicy",
                        {"whenDeleted": "Retain", "whenScaled": "Retain"})
    return obj


def _daemonset(obj: Obj) -> Obj:
    obj = _workload(replicas=False)(obj)
    spec = obj.get("spec")
    if isinstance(spec, dict):
        strategy = spec.setdefault("updateStrategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", 1)
            rolling.setdefault("maxSurge", 0)
    return obj


def _job(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    _template(obj)
    spec.setdefault("parallelism", 1)
    if "completions" not in spec and spec["parallelism"] == 1:
        spec["completions"] = 1
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    return obj


def _cronjob(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job_template = spec.get("jobTemplate")
    if isinstance(job_template, dict):
        _job(job_template)
    return obj


def _service(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    spec.setdefault("type", "ClusterIP")
    if spec["type"] != "ExternalName":
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])
    return obj


def _network_policy(obj: Obj) -> Obj:
    """Upstream: ports are TCP unless told; without policyTypes a policy is for Ingress,
    and for Egress too when it has egress rules."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return obj
    for direction in ("ingress", "egress"):
        for rule in spec.get(direction) or []:
            for port in (rule.get("ports") or []) if isinstance(rule, dict) else []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    return obj


def _horizontal_pod_autoscaler(obj: Obj) -> Obj:
    """v1 and v2 share the key; each version has its own defaults."""
    if obj.get("apiVersion") == "autoscaling/v1":
        return conversion.hpa_v1_defaults(obj)
    return conversion.hpa_v2_defaults(obj)


DEFAULTERS: dict[tuple[str, str], Callable[[Obj], Obj]] = {
    ("", "secrets"): _secret,
    ("", "namespaces"): _namespace,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd,
    ("", "pods"): _pod,
    ("", "services"): _service,
    ("networking.k8s.io", "networkpolicies"): _network_policy,
    ("", "replicationcontrollers"): _replication_controller,
    ("apps", "deployments"): _deployment,
    ("apps", "replicasets"): _workload(history=False),
    ("apps", "statefulsets"): _statefulset,
    ("apps", "daemonsets"): _daemonset,
    ("batch", "jobs"): _job,
    ("batch", "cronjobs"): _cronjob,
    ("autoscaling", "horizontalpodautoscalers"): _horizontal_pod_autoscaler,
    ("", "limitranges"): limitranges.default_limit_range,
}

# Kinds whose metadata.generation counts spec changes (upstream's strategies set it for these).
GENERATION_TRACKED = frozenset({
    ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
    ("apps", "daemonsets"), ("batch", "jobs"), ("batch", "cronjobs"),
    ("", "replicationcontrollers"), ("policy", "poddisruptionbudgets"),
    ("networking.k8s.io", "networkpolicies"), ("networking.k8s.io", "ingresses"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
})


def apply_defaults(resource: Resource, obj: Obj) -> Obj:
    defaulter = DEFAULTERS.get((resource.group, resource.plural))
    return defaulter(clone(obj)) if defaulter else obj


def tracks_generation(resource: Resource) -> bool:
    return resource.custom or (resource.group, resource.plural) in GENERATION_TRACKED
