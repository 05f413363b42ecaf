"""Validation of the built-in kinds beyond names and metadata: upstream's rules, kind by kind.

A validator takes the object about to be stored (and, on update, the stored one) and returns
causes `(field, reason, message)` in upstream's wording; any cause makes the request a 422
Invalid. Covered so far: pods and pod templates (containers required, names, images, ports
in 1-65535, protocols, restart/DNS/pull policies, a running pod's immutable spec), workloads
(selector required, matching the template, immutable), jobs (restart policy; unless
`manualSelector`, the selector and template labels `meta` generated from the uid and name,
so a selector the user wrote is refused, as upstream's `validateGeneratedSelector`;
selector and template immutable), services (type, ports, names, immutable clusterIP), config
maps and secrets (key syntax, `immutable`, at most 1 MiB of data), CRDs, HPAs (replica
bounds, target reference), network policies (ports, ranges and port names, peers, ipBlock
CIDRs and their excepts, policyTypes, selector operators), resource quotas (`quota`:
spec.hard names and values). Other kinds are checked only by
their schema (unknown fields, value types).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from cryptography import x509

from k8py.api import quota
from k8py.api.resources import Resource
from k8py.api.selectors import selector_matches

Cause = tuple[str, str, str]
_PLURAL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_KIND = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def _crd(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    group, plural, kind = spec.get("group", ""), names.get("plural", ""), names.get("kind", "")
    if not group or "." not in group:
        causes.append(("spec.group", "FieldValueInvalid",
                       f'Invalid value: "{group}": should be a domain with at least one dot'))
    if not plural or not _PLURAL.match(plural):
        causes.append(("spec.names.plural", "FieldValueInvalid",
                       f'Invalid value: "{plural}": a lowercase RFC 1123 label is required'))
    if not kind or not _KIND.match(kind):
        causes.append(("spec.names.kind", "FieldValueRequired"
                       if not kind else "FieldValueInvalid",
                       "Required value" if not kind else f'Invalid value: "{kind}"'))
    expected = f"{plural}.{group}"
    if obj["metadata"].get("name") != expected:
        causes.append(("metadata.name", "FieldValueInvalid",
                       f'Invalid value: "{obj["metadata"].get("name")}": must be '
                       f"spec.names.plural+\".\"+spec.group"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", "FieldValueNotSupported",
                       f'Unsupported value: "{spec.get("scope")}": supported values: '
                       '"Cluster", "Namespaced"'))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(("spec.versions", "FieldValueRequired", "Required value"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(("spec.versions", "FieldValueInvalid",
                       "Invalid value: must have exactly one version marked as storage "
                       "version"))
    for i, version in enumerate(versions):
        if not isinstance((version.get("schema") or {}).get("openAPIV3Schema"), dict):
            causes.append((f"spec.versions[{i}].schema.openAPIV3Schema", "FieldValueRequired",
                           "Required value: schemas are required"))
    return causes


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
PROTOCOLS = ("SCTP", "TCP", "UDP")


def _required(causes: list[Cause], field: str) -> None:
    causes.append((field, "FieldValueRequired", "Required value"))


def _not_supported(causes: list[Cause], field: str, value: Any, allowed: tuple) -> None:
    shown = ", ".join(f'"{a}"' for a in allowed)
    causes.append((field, "FieldValueNotSupported",
                   f'Unsupported value: "{value}": supported values: {shown}'))


def _port(causes: list[Cause], field: str, value: Any, required: bool = True) -> None:
    if value is None or (not required and value == 0):  # an optional port of 0 is unset
        if required:
            _required(causes, field)
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        causes.append((field, "FieldValueInvalid",
                       f"Invalid value: {value}: must be between 1 and 65535, inclusive"))


def _containers(causes: list[Cause], containers: Any, field: str, required: bool) -> None:
    if not isinstance(containers, list) or not containers:
        if required:
            _required(causes, field)
        return
    names = set()
    for i, c in enumerate(containers):
        where = f"{field}[{i}]"
        if not isinstance(c, dict):
            causes.append((where, "FieldValueInvalid", "Invalid value: must be an object"))
            continue
        name = c.get("name")
        if not name:
            _required(causes, f"{where}.name")
        elif not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.match(name):
            causes.append((f"{where}.name", "FieldValueInvalid",
                           f'Invalid value: "{name}": a lowercase RFC 1123 label must consist '
                           "of lower case alphanumeric characters or '-', and must start and "
                           "end with an alphanumeric character"))
        elif name in names:
            causes.append((f"{where}.name", "FieldValueDuplicate",
                           f'Duplicate value: "{name}"'))
        names.add(name)
        if not c.get("image") and field.endswith("containers") and "ephemeral" not in field:
            _required(causes, f"{where}.image")
        for j, port in enumerate(c.get("ports") or []):
            if not isinstance(port, dict):
                continue
            _port(causes, f"{where}.ports[{j}].containerPort", port.get("containerPort"))
            _port(causes, f"{where}.ports[{j}].hostPort", port.get("hostPort"), False)
            if port.get("protocol", "TCP") not in PROTOCOLS:
                _not_supported(causes, f"{where}.ports[{j}].protocol", port["protocol"],
                               PROTOCOLS)
        policy = c.get("imagePullPolicy")
        if policy is not None and policy not in ("Always", "IfNotPresent", "Never"):
            _not_supported(causes, f"{where}.imagePullPolicy", policy,
                           ("Always", "IfNotPresent", "Never"))


def _pod_spec(causes: list[Cause], spec: Any, field: str) -> None:
    if not isinstance(spec, dict):
        _required(causes, field)
        return
    _containers(causes, spec.get("containers"), f"{field}.containers", True)
    _containers(causes, spec.get("initContainers"), f"{field}.initContainers", False)
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in ("Always", "OnFailure", "Never"):
        _not_supported(causes, f"{field}.restartPolicy", policy, ("Always", "OnFailure", "Never"))
    dns = spec.get("dnsPolicy")
    allowed = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
    if dns is not None and dns not in allowed:
        _not_supported(causes, f"{field}.dnsPolicy", dns, allowed)


EPHEMERAL_FORBIDDEN = ("ports", "livenessProbe", "readinessProbe", "startupProbe",
                       "lifecycle", "resources", "resizePolicy", "restartPolicy")


def _ephemeral_containers(causes: list[Cause], spec: dict[str, Any],
                          old_spec: dict[str, Any] | None) -> None:
    """validateEphemeralContainers and ValidatePodEphemeralContainersUpdate: debug
    containers have a unique name and an image, none of what only a long-lived container
    has (ports, probes, resources, ...), a target among the pod's containers; once added
    they are never changed or removed."""
    ephemeral = spec.get("ephemeralContainers") or []
    if not isinstance(ephemeral, list):
        return
    others = {c.get("name") for c in (spec.get("containers") or []) +
              (spec.get("initContainers") or []) if isinstance(c, dict)}
    _containers(causes, ephemeral, "spec.ephemeralContainers", False)
    for i, container in enumerate(ephemeral):
        if not isinstance(container, dict):
            continue
        where = f"spec.ephemeralContainers[{i}]"
        if container.get("name") in others:
            causes.append((f"{where}.name", "FieldValueDuplicate",
                           f'Duplicate value: "{container["name"]}"'))
        if not container.get("image"):
            _required(causes, f"{where}.image")
        for field in EPHEMERAL_FORBIDDEN:
            if container.get(field):
                causes.append((f"{where}.{field}", "FieldValueForbidden",
                               "Forbidden: cannot be set for an Ephemeral Container"))
        target = container.get("targetContainerName")
        if target and target not in others:
            causes.append((f"{where}.targetContainerName", "FieldValueNotFound",
                           f'Not found: "{target}"'))
    if old_spec is None:
        return
    new_by_name = {c.get("name"): (i, c) for i, c in enumerate(ephemeral)
                   if isinstance(c, dict)}
    for old in old_spec.get("ephemeralContainers") or []:
        name = old.get("name")
        if name not in new_by_name:
            causes.append(("spec.ephemeralContainers", "FieldValueForbidden",
                           f'Forbidden: existing ephemeral containers "{name}" may not be '
                           "removed"))
        elif new_by_name[name][1] != old:
            causes.append((f"spec.ephemeralContainers[{new_by_name[name][0]}]",
                           "FieldValueForbidden",
                           f'Forbidden: existing ephemeral containers "{name}" may not be '
                           "changed"))


def _pod(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes: list[Cause] = []
    _pod_spec(causes, obj.get("spec"), "spec")
    if isinstance(obj.get("spec"), dict):
        _ephemeral_containers(causes, obj["spec"], old.get("spec") or {} if old else None)
    if old is not None and not causes:
        # Upstream lets a running pod change only these spec fields (ephemeral containers
        # change through their own subresource).
        mutable = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds",
                   "schedulingGates", "ephemeralContainers")
        new_spec = {k: v for k, v in (obj.get("spec") or {}).items() if k not in mutable}
        old_spec = {k: v for k, v in (old.get("spec") or {}).items() if k not in mutable}
        for spec in (new_spec, old_spec):
            spec["containers"] = [{k: v for k, v in c.items() if k != "image"}
                                  for c in spec.get("containers") or []]
            spec["initContainers"] = [{k: v for k, v in c.items() if k != "image"}
                                      for c in spec.get("initContainers") or []]
            if not old_spec.get("nodeName"):
                spec.pop("nodeName", None)  # binding sets it once
        if new_spec != old_spec:
            causes.append(("spec", "FieldValueForbidden",
                           "Forbidden: pod updates may not change fields other than "
                           "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                           "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                           "existing tolerations),`spec.terminationGracePeriodSeconds` "
                           "(allow it to be set to 1 if it was previously negative)"))
    return causes


def _replication_controller(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """A ReplicationController's selector is a plain label map, and may be left out (the
    template's labels are used); checked as the equivalent matchLabels selector."""
    def as_label_selector(rc: dict[str, Any] | None) -> dict[str, Any] | None:
        if rc is None or not isinstance(rc.get("spec"), dict):
            return rc
        selector = rc["spec"].get("selector")
        if isinstance(selector, dict) and selector:
            return {**rc, "spec": {**rc["spec"], "selector": {"matchLabels": selector}}}
        return rc
    return _workload(as_label_selector(obj), as_label_selector(old), selector_required=False)


def _workload(obj: dict[str, Any], old: dict[str, Any] | None,
              selector_required: bool = True) -> list[Cause]:
    causes: list[Cause] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        _required(causes, "spec")
        return causes
    replicas = spec.get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
        causes.append(("spec.replicas", "FieldValueInvalid",
                       f"Invalid value: {replicas}: must be greater than or equal to 0"))
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        if selector_required:
            _required(causes, "spec.selector")
    elif isinstance(selector, dict):
        if not (selector.get("matchLabels") or selector.get("matchExpressions")):
            causes.append(("spec.selector", "FieldValueInvalid",
                           "Invalid value: empty selector is invalid for deployment"))
        elif not selector_matches(selector, labels):
            causes.append(("spec.template.metadata.labels", "FieldValueInvalid",
                           f"Invalid value: {labels}: `selector` does not match template "
                           "`labels`"))
        if old is not None and selector != (old.get("spec") or {}).get("selector"):
            causes.append(("spec.selector", "FieldValueInvalid",
                           f"Invalid value: {selector}: field is immutable"))
    _pod_spec(causes, template.get("spec"), "spec.template.spec")
    return causes


def _go_map(value: Any) -> str:
    """A label map as Go's %#v prints it, as upstream's messages show values."""
    if not isinstance(value, dict):
        return "map[string]string(nil)"
    inner = ", ".join(f"{json.dumps(str(k))}:{json.dumps(str(v))}"
                      for k, v in sorted(value.items()))
    return f"map[string]string{{{inner}}}"


def _go_label_selector(selector: Any) -> str:
    """A LabelSelector as Go's %#v prints it."""
    if not isinstance(selector, dict):
        return "null"
    expressions = selector.get("matchExpressions")
    if isinstance(expressions, list):
        items = []
        for e in expressions:
            e = e if isinstance(e, dict) else {}
            values = e.get("values")
            shown = ("[]string{" + ", ".join(json.dumps(str(v)) for v in values) + "}"
                     if isinstance(values, list) else "[]string(nil)")
            key = json.dumps(str(e.get("key", "")))
            operator = json.dumps(str(e.get("operator", "")))
            items.append(f"v1.LabelSelectorRequirement{{Key:{key}, Operator:{operator}, "
                         f"Values:{shown}}}")
        shown_expressions = "[]v1.LabelSelectorRequirement{" + ", ".join(items) + "}"
    else:
        shown_expressions = "[]v1.LabelSelectorRequirement(nil)"
    return (f"v1.LabelSelector{{MatchLabels:{_go_map(selector.get('matchLabels'))}, "
            f"MatchExpressions:{shown_expressions}}}")


# The labels a Job's selector is generated from (`meta` sets them on create).
JOB_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_JOB_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"


def _template_labels(obj: dict[str, Any]) -> dict[str, Any]:
    template = (obj.get("spec") or {}).get("template") or {}
    return (template.get("metadata") or {}).get("labels") or {}


def _job_generated_selector(causes: list[Cause], obj: dict[str, Any],
                            old: dict[str, Any] | None) -> None:
    """Upstream's `validateGeneratedSelector`: without `manualSelector`, the template carries
    the labels made from the Job's uid and name and the selector selects exactly by them, so
    a selector the user wrote is refused."""
    spec, metadata = obj["spec"], obj["metadata"]
    selector = spec.get("selector")
    if spec.get("manualSelector") is True or not isinstance(selector, dict):
        return
    uid, name = metadata.get("uid", ""), metadata.get("name", "")
    if not uid:
        _required(causes, "metadata.uid")
    labels = _template_labels(obj)
    expected = {LEGACY_JOB_CONTROLLER_UID: uid, LEGACY_JOB_NAME: name}
    # Jobs stored before the prefixed labels existed are let through, as upstream.
    old_labels = _template_labels(old) if old is not None else {}
    if old is None or (JOB_CONTROLLER_UID in old_labels and JOB_NAME in old_labels):
        expected.update({JOB_CONTROLLER_UID: uid, JOB_NAME: name})
    for key in (LEGACY_JOB_CONTROLLER_UID, LEGACY_JOB_NAME, JOB_CONTROLLER_UID, JOB_NAME):
        if key not in expected:
            continue
        field = f"spec.template.metadata.labels[{key}]"
        if key not in labels:
            causes.append((field, "FieldValueRequired",
                           f"Required value: must be '{expected[key]}'"))
        elif labels[key] != expected[key]:
            causes.append((field, "FieldValueInvalid",
                           f"Invalid value: {_go_map(labels)}: must be '{expected[key]}'"))
    if not selector_matches(selector, expected):
        causes.append(("spec.selector", "FieldValueInvalid",
                       f"Invalid value: {_go_label_selector(selector)}: `selector` not "
                       "auto-generated"))


def _job(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes: list[Cause] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        _required(causes, "spec")
        return causes
    template = spec.get("template") or {}
    labels = _template_labels(obj)
    _job_generated_selector(causes, obj, old)
    selector = spec.get("selector")
    old_spec = (old or {}).get("spec") or {}
    if selector is None:
        # A Job stored before the API server generated selectors keeps working without one.
        if old is None or old_spec.get("selector") is not None:
            _required(causes, "spec.selector")
    elif not isinstance(selector, dict):
        causes.append(("spec.selector", "FieldValueInvalid",
                       "Invalid value: must be a label selector"))
    elif not selector_matches(selector, labels):
        causes.append(("spec.template.metadata.labels", "FieldValueInvalid",
                       f"Invalid value: {_go_map(labels)}: `selector` does not match template "
                       "`labels`"))
    _pod_spec(causes, template.get("spec"), "spec.template.spec")
    policy = (template.get("spec") or {}).get("restartPolicy")
    if policy not in ("OnFailure", "Never"):
        _not_supported(causes, "spec.template.spec.restartPolicy", policy or "",
                       ("OnFailure", "Never"))
    if old is not None:
        if selector != old_spec.get("selector"):
            causes.append(("spec.selector", "FieldValueInvalid",
                           f"Invalid value: {_go_label_selector(selector)}: field is immutable"))
        if template != (old_spec.get("template") or {}):
            causes.append(("spec.template", "FieldValueInvalid",
                           "Invalid value: field is immutable"))
    return causes


SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


def _service(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    if kind not in SERVICE_TYPES:
        _not_supported(causes, "spec.type", kind, SERVICE_TYPES)
    ports = spec.get("ports") or []
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        _required(causes, "spec.ports")
    names = set()
    for i, port in enumerate(ports):
        if not isinstance(port, dict):
            continue
        _port(causes, f"spec.ports[{i}].port", port.get("port"))
        if port.get("protocol", "TCP") not in PROTOCOLS:
            _not_supported(causes, f"spec.ports[{i}].protocol", port["protocol"], PROTOCOLS)
        if len(ports) > 1 and not port.get("name"):
            _required(causes, f"spec.ports[{i}].name")
        if port.get("name") and port["name"] in names:
            causes.append((f"spec.ports[{i}].name", "FieldValueDuplicate",
                           f'Duplicate value: "{port["name"]}"'))
        names.add(port.get("name"))
        target = port.get("targetPort")
        if isinstance(target, int) and not isinstance(target, bool):
            _port(causes, f"spec.ports[{i}].targetPort", target)
    if kind == "ExternalName" and not spec.get("externalName"):
        _required(causes, "spec.externalName")
    if old is not None:
        before = (old.get("spec") or {}).get("clusterIP")
        if before and spec.get("clusterIP", before) != before:
            causes.append(("spec.clusterIP", "FieldValueInvalid",
                           f'Invalid value: "{spec.get("clusterIP")}": field is immutable'))
    return causes


MAX_DATA_BYTES = 1024 * 1024  # upstream's core.MaxSecretSize, for ConfigMaps too


def _base64_size(text: Any) -> int:
    """Bytes a base64 value decodes to (its syntax was checked when it was decoded)."""
    if not isinstance(text, str):
        return 0
    text = text.replace("\r", "").replace("\n", "")
    return len(text) // 4 * 3 - text[-2:].count("=")


def _config(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes: list[Cause] = []
    for field in ("data", "binaryData"):
        for key in obj.get(field) or {}:
            if not _CONFIG_KEY.match(key) or len(key) > 253:
                causes.append((f"{field}[{key}]", "FieldValueInvalid",
                               f'Invalid value: "{key}": a valid config key must consist of '
                               "alphanumeric characters, '-', '_' or '.'"))
    if old is not None and old.get("immutable"):
        if any(obj.get(f) != old.get(f) for f in ("data", "binaryData", "immutable")):
            causes.append(("data", "FieldValueForbidden",
                           "Forbidden: field is immutable when `immutable` is set"))
    return causes


def _too_long(field: str) -> Cause:
    return (field, "FieldValueTooLong", f"Too long: must have at most {MAX_DATA_BYTES} bytes")


def _config_map(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes = _config(obj, old)
    size = sum(len(v.encode()) for v in (obj.get("data") or {}).values() if isinstance(v, str))
    size += sum(_base64_size(v) for v in (obj.get("binaryData") or {}).values())
    if size > MAX_DATA_BYTES:
        causes.append(_too_long("[]"))  # upstream's path for "the whole object"
    return causes


def _secret(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes = _config(obj, old)
    if sum(_base64_size(v) for v in (obj.get("data") or {}).values()) > MAX_DATA_BYTES:
        causes.append(_too_long("data"))
    return causes


def _csr(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """certificates.k8s.io/v1 CertificateSigningRequests (upstream's
    ValidateCertificateSigningRequestCreate and the conditions' rules)."""
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    if old is None:
        request = spec.get("request")
        if not request:
            causes.append(("spec.request", "FieldValueRequired", "Required value"))
        elif certificate_request(request) is None:
            causes.append(("spec.request", "FieldValueInvalid",
                           "Invalid value: []byte{...}: PEM block type must be CERTIFICATE "
                           "REQUEST"))
        if not spec.get("signerName"):
            causes.append(("spec.signerName", "FieldValueRequired", "Required value"))
        elif not _SIGNER_NAME.match(spec["signerName"]):
            causes.append(("spec.signerName", "FieldValueInvalid",
                           f'Invalid value: "{spec["signerName"]}": must be a fully qualified '
                           "domain and path of the form 'example.com/signer-name'"))
        if not spec.get("usages"):
            causes.append(("spec.usages", "FieldValueRequired", "Required value"))
        seconds = spec.get("expirationSeconds")
        if seconds is not None and seconds < 600:
            causes.append(("spec.expirationSeconds", "FieldValueInvalid",
                           f"Invalid value: {seconds}: may not specify a duration less than "
                           "600 seconds (10 minutes)"))
    conditions = (obj.get("status") or {}).get("conditions") or []
    kinds = [c.get("type") for c in conditions if isinstance(c, dict)]
    if "Approved" in kinds and "Denied" in kinds:
        index = kinds.index("Denied")
        causes.append((f"status.conditions[{index}].type", "FieldValueInvalid",
                       'Invalid value: "Denied": Approved and Denied conditions are mutually '
                       "exclusive"))
    for kind in ("Approved", "Denied", "Failed"):
        if kinds.count(kind) > 1:
            causes.append(("status.conditions", "FieldValueDuplicate",
                           f'Duplicate value: "{kind}"'))
    return causes


_SIGNER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-A-Za-z0-9_.]+$")


def _horizontal_pod_autoscaler(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """validateHorizontalPodAutoscalerSpec: the replica bounds and the target reference
    (the fields v1 and v2 share)."""
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    minimum, maximum = spec.get("minReplicas"), spec.get("maxReplicas", 0)
    if isinstance(minimum, int) and minimum < 1:
        causes.append(("spec.minReplicas", "FieldValueInvalid",
                       f"Invalid value: {minimum}: must be greater than or equal to 1"))
    if isinstance(maximum, int) and maximum < 1:
        causes.append(("spec.maxReplicas", "FieldValueInvalid",
                       f"Invalid value: {maximum}: must be greater than 0"))
    if isinstance(minimum, int) and isinstance(maximum, int) and maximum < minimum:
        causes.append(("spec.maxReplicas", "FieldValueInvalid",
                       f"Invalid value: {maximum}: must be greater than or equal to "
                       "`minReplicas`"))
    ref = spec.get("scaleTargetRef") or {}
    for field in ("kind", "name"):
        if not ref.get(field):
            _required(causes, f"spec.scaleTargetRef.{field}")
    utilization = spec.get("targetCPUUtilizationPercentage")
    if isinstance(utilization, int) and utilization < 1:
        causes.append(("spec.targetCPUUtilizationPercentage", "FieldValueInvalid",
                       f"Invalid value: {utilization}: must be greater than 0"))
    return causes


def _label_selector(causes: list[Cause], selector: Any, field: str) -> None:
    """Upstream's ValidateLabelSelector, for what a schema does not catch: operators and
    their values."""
    if not isinstance(selector, dict):
        return
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        if not isinstance(expr, dict):
            continue
        where = f"{field}.matchExpressions[{i}]"
        operator, values = expr.get("operator"), expr.get("values") or []
        if operator in ("In", "NotIn"):
            if not values:
                causes.append((f"{where}.values", "FieldValueRequired",
                               "Required value: must be specified when `operator` is 'In' "
                               "or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                causes.append((f"{where}.values", "FieldValueForbidden",
                               "Forbidden: may not be specified when `operator` is "
                               "'Exists' or 'DoesNotExist'"))
        else:
            causes.append((f"{where}.operator", "FieldValueInvalid",
                           f'Invalid value: "{operator}": not a valid selector operator'))


def _port_name_problems(name: str) -> list[str]:
    """Upstream's IsValidPortName (an IANA service name)."""
    problems = []
    if len(name) > 15:
        problems.append("must be no more than 15 characters")
    if not re.fullmatch(r"[-a-z0-9]+", name):
        problems.append("must contain only alpha-numeric characters (a-z, 0-9), and "
                        "hyphens (-)")
    elif not re.search(r"[a-z]", name):
        problems.append("must contain at least one letter (a-z)")
    if "--" in name:
        problems.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        problems.append("must not begin or end with a hyphen")
    return problems


def _network_policy_port(causes: list[Cause], port: dict[str, Any], field: str) -> None:
    protocol = port.get("protocol")
    if protocol is not None and protocol not in ("TCP", "UDP", "SCTP"):
        _not_supported(causes, f"{field}.protocol", protocol, ("TCP", "UDP", "SCTP"))
    number, end = port.get("port"), port.get("endPort")
    if isinstance(number, int) and not isinstance(number, bool):
        _port(causes, f"{field}.port", number)
        if end is not None:
            if isinstance(end, int) and end < number:
                causes.append((f"{field}.endPort", "FieldValueInvalid",
                               f"Invalid value: {number}: must be greater than or equal to "
                               "`port`"))
            _port(causes, f"{field}.endPort", end)
    elif isinstance(number, str):
        if end is not None:
            causes.append((f"{field}.endPort", "FieldValueInvalid",
                           f"Invalid value: {end}: may not be specified when `port` is "
                           "non-numeric"))
        for problem in _port_name_problems(number):
            causes.append((f"{field}.port", "FieldValueInvalid",
                           f'Invalid value: "{number}": {problem}'))
    elif end is not None:
        causes.append((f"{field}.endPort", "FieldValueInvalid",
                       f"Invalid value: {end}: may not be specified when `port` is not "
                       "specified"))


def _cidr(causes: list[Cause], field: str, text: str):
    """`text` as a network, or None with the cause upstream gives."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except (ValueError, TypeError):
        causes.append((field, "FieldValueInvalid", f'Invalid value: "{text}": not a valid CIDR'))
        return None


def _ip_block(causes: list[Cause], block: dict[str, Any], field: str) -> None:
    if not block.get("cidr"):
        _required(causes, f"{field}.cidr")
        return
    network = _cidr(causes, f"{field}.cidr", block["cidr"])
    if network is None:
        return
    for i, text in enumerate(block.get("except") or []):
        excepted = _cidr(causes, f"{field}.except[{i}]", text)
        if excepted is None:
            return
        if excepted.version != network.version or not excepted.subnet_of(network) or \
                excepted.prefixlen <= network.prefixlen:
            causes.append((f"{field}.except[{i}]", "FieldValueInvalid",
                           f'Invalid value: "{text}": must be a strict subset of `cidr`'))


def _network_policy(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """Upstream's ValidateNetworkPolicySpec."""
    causes: list[Cause] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return causes
    _label_selector(causes, spec.get("podSelector"), "spec.podSelector")
    for direction, peers_field in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            if not isinstance(rule, dict):
                continue
            where = f"spec.{direction}[{i}]"
            for j, port in enumerate(rule.get("ports") or []):
                if isinstance(port, dict):
                    _network_policy_port(causes, port, f"{where}.ports[{j}]")
            for j, peer in enumerate(rule.get(peers_field) or []):
                if not isinstance(peer, dict):
                    continue
                at = f"{where}.{peers_field}[{j}]"
                kinds = [k for k in ("podSelector", "namespaceSelector", "ipBlock")
                         if peer.get(k) is not None]
                for selector in ("podSelector", "namespaceSelector"):
                    _label_selector(causes, peer.get(selector), f"{at}.{selector}")
                if isinstance(peer.get("ipBlock"), dict):
                    _ip_block(causes, peer["ipBlock"], f"{at}.ipBlock")
                if not kinds:
                    causes.append((at, "FieldValueRequired",
                                   "Required value: must specify a peer"))
                elif len(kinds) > 1 and "ipBlock" in kinds:
                    causes.append((at, "FieldValueForbidden",
                                   "Forbidden: may not specify both ipBlock and another "
                                   "peer"))
    types = spec.get("policyTypes") or []
    if len(types) > 2:
        causes.append(("spec.policyTypes", "FieldValueInvalid",
                       f"Invalid value: {json.dumps(types)}: may not specify more than two "
                       "policyTypes"))
    else:
        for i, policy_type in enumerate(types):
            if policy_type not in ("Ingress", "Egress"):
                _not_supported(causes, f"spec.policyTypes[{i}]", policy_type,
                               ("Ingress", "Egress"))
    return causes


def certificate_request(request: Any):
    """The x509 CSR in a CSR object's base64 `spec.request` PEM, or None."""
    try:
        return x509.load_pem_x509_csr(base64.b64decode(request))
    except (ValueError, TypeError, binascii.Error):
        return None


def _new_only(check: Callable[[dict[str, Any]], list[Cause]]):
    return lambda obj, old: check(obj)


VALIDATORS: dict[tuple[str, str], Callable[[dict[str, Any], dict[str, Any] | None],
                                           list[Cause]]] = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): _new_only(_crd),
    ("", "pods"): _pod,
    ("apps", "deployments"): _workload,
    ("apps", "replicasets"): _workload,
    ("apps", "statefulsets"): _workload,
    ("apps", "daemonsets"): _workload,
    ("", "replicationcontrollers"): _replication_controller,
    ("batch", "jobs"): _job,
    ("", "services"): _service,
    ("", "configmaps"): _config_map,
    ("", "secrets"): _secret,
    ("certificates.k8s.io", "certificatesigningrequests"): _csr,
    ("autoscaling", "horizontalpodautoscalers"): _horizontal_pod_autoscaler,
    ("networking.k8s.io", "networkpolicies"): _network_policy,
    ("", "resourcequotas"): quota.validation_causes,
}


def validate(resource: Resource, obj: dict[str, Any],
             old: dict[str, Any] | None = None) -> list[Cause]:
    """Causes against the kind's rules; old is the stored object on update."""
    validator = VALIDATORS.get((resource.group, resource.plural))
    return validator(obj, old) if validator else []
