"""Object metadata on create and update, as upstream's generic registry handles it.

On create: the name comes from `metadata.name` or is made from `generateName` plus five
random characters; names are checked (DNS-1123 subdomain; a DNS-1123 label for namespaces and
services, as upstream); the server sets `uid`, `creationTimestamp` and `generation: 1` and
drops whatever the client sent for `resourceVersion`, `deletionTimestamp` and the like.

On update: identity fields are carried over from the stored object (`uid`,
`creationTimestamp`, `generateName`, `deletionTimestamp`). For the kinds whose upstream
strategy tracks it (`defaults.GENERATION_TRACKED`), `generation` starts at 1 and is bumped
when anything other than metadata and status changed. Both paths apply the kind's defaults.

Some kinds fill in fields from the new object's identity on create, after its defaults
(`CREATE_STRATEGIES`, upstream's `PrepareForCreate`): a Job without `manualSelector: true`
gets its selector generated, `batch.kubernetes.io/controller-uid=<uid>`, and its pod template
the labels `batch.kubernetes.io/controller-uid`, `controller-uid`,
`batch.kubernetes.io/job-name` and `job-name` (values the user already set are kept, for
validation to refuse if they conflict). So every Job's pods are selected by its uid alone.

Both end with validation: the kind's rules (`validation`) and, for custom resources, their
CRD's schema (`structural`); any cause is a 422 Invalid.

These functions take and return plain dicts; they never mutate their inputs.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable
from typing import Any

from k8py.api import qos, structural, validation
from k8py.api.defaults import apply_defaults, tracks_generation
from k8py.api.errors import BadRequest, invalid
from k8py.api.jsondoc import clone
from k8py.api.resources import Resource
from k8py.api.timestamps import now

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAMED = {("", "namespaces"), ("", "services")}
# Letters upstream uses for generateName suffixes (no vowels, no confusable digits).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SERVER_SET_FIELDS = ("uid", "creationTimestamp", "resourceVersion", "deletionTimestamp",
                     "deletionGracePeriodSeconds", "generation", "selfLink")


def name_problem(resource: Resource, name: str) -> str | None:
    """Why name is not valid for resource, or None."""
    if (resource.group, resource.plural) == ("apiregistration.k8s.io", "apiservices"):
        # `<version>.<group>`, and `v1.` for the core group: a version, a dot, a subdomain
        version, dot, group = name.partition(".")
        if not dot or not DNS1123_LABEL.match(version) or (
                group and (len(group) > 253 or not DNS1123_SUBDOMAIN.match(group))):
            return "must be a valid version, a dot, and a valid API group (or nothing)"
        return None
    if resource.group == "rbac.authorization.k8s.io":
        # upstream's ValidateRBACName: any path segment (`system:node`, `edit`)
        if name in (".", ".."):
            return f"may not be '{name}'"
        for bad in ("/", "%"):
            if bad in name:
                return f"may not contain '{bad}'"
        if len(name) > 253:  # upstream has no bound; k8py keeps names key-sized
            return "must be no more than 253 characters"
        if any(ord(c) < 0x20 or ord(c) == 0x7f for c in name):
            # upstream lets them through; a name is also a store key and a log line
            return "may not contain control characters"
        return None
    if (resource.group, resource.plural) in _LABEL_NAMED:
        if len(name) > 63:
            return "must be no more than 63 characters"
        if not DNS1123_LABEL.match(name):
            return (
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters"
                " or '-', and must start and end with an alphanumeric character"
            )
        return None
    if len(name) > 253:
        return "must be no more than 253 characters"
    if not DNS1123_SUBDOMAIN.match(name):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters,"
            " '-' or '.', and must start and end with an alphanumeric character"
        )
    return None


def check_type(resource: Resource, obj: Any) -> dict[str, Any]:
    """The body must be an object of the resource's kind (filled in when missing)."""
    if not isinstance(obj, dict):
        raise BadRequest("the request body must be a JSON or YAML object")
    obj = clone(obj)
    kind = obj.setdefault("kind", resource.kind)
    api_version = obj.setdefault("apiVersion", resource.api_version)
    if kind != resource.kind or api_version != resource.api_version:
        raise BadRequest(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({resource.api_version})"
            if api_version != resource.api_version
            else f"the kind in the data ({kind}) does not match the expected kind "
            f"({resource.kind})"
        )
    metadata = obj.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object")
    return obj


def prepare_create(resource: Resource, obj: dict[str, Any], namespace: str | None) -> dict:
    """A new object ready to store (see module docstring); raises Invalid or BadRequest."""
    obj = check_type(resource, obj)
    metadata = obj["metadata"]
    if resource.namespaced:
        given = metadata.get("namespace")
        if given and namespace and given != namespace:
            raise BadRequest(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        metadata["namespace"] = namespace or given or "default"
    else:
        metadata.pop("namespace", None)
    name = metadata.get("name")
    if not name:
        prefix = metadata.get("generateName")
        if not prefix:
            raise invalid(resource.kind, "", [("metadata.name", "FieldValueRequired",
                                              "Required value: name or generateName is "
                                              "required")], resource.group)
        suffix = "".join(random.choices(_SUFFIX_ALPHABET, k=5))
        name = metadata["name"] = prefix[: 253 - 5] + suffix
    if not isinstance(name, str):
        raise BadRequest("metadata.name must be a string")
    problem = name_problem(resource, name)
    if problem:
        raise invalid(resource.kind, name, [("metadata.name", "FieldValueInvalid",
                                            f'Invalid value: "{name}": {problem}')],
                      resource.group)
    for field in SERVER_SET_FIELDS:
        metadata.pop(field, None)
    if "status" in resource.subresources and (resource.group, resource.plural) != ("", "nodes"):
        # Status is the system's to write, through /status; nodes are the exception, as
        # upstream: a kubelet registers its node with its status.
        obj.pop("status", None)
    metadata["uid"] = str(uuid.uuid4())
    metadata["creationTimestamp"] = now()
    if tracks_generation(resource):
        metadata["generation"] = 1
    _check_maps(resource, obj)
    obj = apply_defaults(resource, obj)
    strategy = CREATE_STRATEGIES.get((resource.group, resource.plural))
    if strategy is not None:
        obj = strategy(obj)
    initial = INITIAL_STATUS.get((resource.group, resource.plural))
    if initial is not None and "status" not in obj and isinstance(obj.get("spec"), dict):
        obj["status"] = initial(obj)
    return _validated(resource, obj)


def prepare_update(resource: Resource, obj: dict[str, Any], old: dict[str, Any]) -> dict:
    """The new version of old, with identity carried over and generation maintained."""
    obj = check_type(resource, obj)
    metadata, old_meta = obj["metadata"], old["metadata"]
    name = old_meta["name"]
    if metadata.get("name", name) != name:
        raise BadRequest(
            f'the name of the object ({metadata.get("name")}) does not match the name on '
            f"the URL ({name})"
        )
    metadata["name"] = name
    if resource.namespaced:
        metadata["namespace"] = old_meta["namespace"]
    for field in ("uid", "creationTimestamp", "generateName", "deletionTimestamp",
                  "deletionGracePeriodSeconds"):
        if field in old_meta:
            metadata[field] = old_meta[field]
        else:
            metadata.pop(field, None)
    metadata.pop("generation", None)
    metadata.pop("resourceVersion", None)
    obj = apply_defaults(resource, obj)
    if tracks_generation(resource):
        generation = old_meta.get("generation", 1)
        if _spec_of(obj) != _spec_of(old):
            generation += 1
        obj["metadata"]["generation"] = generation
    _check_maps(resource, obj)
    return _validated(resource, obj, old)


def _generate_job_selector(job: dict[str, Any]) -> dict[str, Any]:
    """Upstream's job `generateSelector`, unless the Job asks for `manualSelector`."""
    spec = job.get("spec")
    if not isinstance(spec, dict):
        return job
    if spec.get("manualSelector") is None:
        spec["manualSelector"] = False  # upstream defaults it
    if spec["manualSelector"] is True:
        return job
    metadata = job["metadata"]
    template = spec.setdefault("template", {})
    if not isinstance(template, dict):
        return job
    template_meta = template.setdefault("metadata", {})
    if not isinstance(template_meta, dict):
        return job
    labels = template_meta.get("labels")
    if not isinstance(labels, dict):
        labels = template_meta["labels"] = {}
    for key in (validation.LEGACY_JOB_NAME, validation.JOB_NAME):
        labels.setdefault(key, metadata["name"])
    for key in (validation.LEGACY_JOB_CONTROLLER_UID, validation.JOB_CONTROLLER_UID):
        labels.setdefault(key, metadata["uid"])
    selector = spec.get("selector")
    if not isinstance(selector, dict):
        selector = spec["selector"] = {}
    match_labels = selector.get("matchLabels")
    if not isinstance(match_labels, dict):
        match_labels = selector["matchLabels"] = {}
    match_labels.setdefault(validation.JOB_CONTROLLER_UID, metadata["uid"])
    return job


# (group, plural) -> fills in an object about to be created, after its defaults; may mutate
# it (it is the request's own copy).
CREATE_STRATEGIES: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("batch", "jobs"): _generate_job_selector,
}


def _zeros(*fields: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda obj: dict.fromkeys(fields, 0)


# (group, plural) -> the status a new object starts with: what upstream's PrepareForCreate
# sets, as Go writes it back (fields without omitempty appear as zeros, nested structs as
# {}), so a typed client reading `status.phase` or `status.replicas` right after a create
# finds it. Kinds with a status subresource not listed here start without one.
INITIAL_STATUS: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("", "pods"): lambda obj: {"phase": "Pending",
                               "qosClass": qos.pod_qos_class(obj.get("spec") or {})},
    ("", "services"): lambda obj: {"loadBalancer": {}},
    # v1's replica counts have no omitempty; v2's currentMetrics has none either (null)
    ("autoscaling", "horizontalpodautoscalers"): lambda obj: (
        {"currentReplicas": 0, "desiredReplicas": 0}
        if obj.get("apiVersion") == "autoscaling/v1"
        else {"desiredReplicas": 0, "currentMetrics": None}),
    ("networking.k8s.io", "ingresses"): lambda obj: {"loadBalancer": {}},
    ("", "persistentvolumeclaims"): lambda obj: {"phase": "Pending"},
    ("", "persistentvolumes"): lambda obj: {"phase": "Pending"},
    ("", "resourcequotas"): _zeros(),
    ("", "replicationcontrollers"): _zeros("replicas"),
    ("apps", "deployments"): _zeros(),
    ("apps", "replicasets"): _zeros("replicas"),
    ("apps", "statefulsets"): _zeros("replicas", "availableReplicas"),
    ("apps", "daemonsets"): _zeros("currentNumberScheduled", "numberMisscheduled",
                                   "desiredNumberScheduled", "numberReady"),
    ("batch", "jobs"): _zeros(),
    ("batch", "cronjobs"): _zeros(),
    ("policy", "poddisruptionbudgets"): _zeros("disruptionsAllowed", "currentHealthy",
                                               "desiredHealthy", "expectedPods"),
}


def _validated(resource: Resource, obj: dict[str, Any],
               old: dict[str, Any] | None = None) -> dict[str, Any]:
    """obj, or Invalid with every cause the kind's rules (or CRD schema) find."""
    causes = validation.validate(resource, obj, old)
    if resource.custom and resource.schema:
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        causes += structural.validate(body, resource.schema)
    if causes:
        raise invalid(resource.kind, obj["metadata"].get("name", ""), causes, resource.group)
    return obj


def _spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _check_maps(resource: Resource, obj: dict[str, Any]) -> None:
    metadata = obj["metadata"]
    for field in ("labels", "annotations"):
        value = metadata.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise invalid(resource.kind, metadata.get("name", ""), [
                (f"metadata.{field}", "FieldValueInvalid", "must be a map of strings to strings")
            ], resource.group)
