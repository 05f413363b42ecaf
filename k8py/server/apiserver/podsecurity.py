"""PodSecurity admission: upstream's built-in plugin (k8s.io/pod-security-admission, v1.32),
with its default configuration (every mode `privileged:latest`, no exemptions, as k3s's).

A namespace chooses its policy with labels, one level per mode and an optional version:
`pod-security.kubernetes.io/<mode>` = privileged | baseline | restricted and
`pod-security.kubernetes.io/<mode>-version` = latest | v1.<n>, for the modes
- enforce: a pod that violates the level is refused (403 `pods "p" is forbidden: violates
  PodSecurity "restricted:latest": <violations>`);
- warn: the write is answered with a warning (`would violate PodSecurity ...`);
- audit: the write gets the audit annotation `pod-security.kubernetes.io/audit-violations`.
A missing label is `privileged` (`latest`); an enforce level stricter than warn's, when warn
is not labelled, warns too (upstream's defaulting). The checks themselves are in
`podsecuritychecks`.

What is checked, as upstream (a validating plugin, on creates and updates only):
- pods: creates, and updates that change something the policy cares about (the images of
  containers, containers added; an added ephemeral container through
  `pods/ephemeralcontainers`); `status`, `binding`, `eviction` and the streaming
  subresources never;
- the kinds with a pod template (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob,
  ReplicationController, PodTemplate): warn and audit only, never enforced (their pods are);
- namespaces: labels that do not parse are refused on create, and on update unless the
  same invalid labels were there before (422 `Namespace "x" is invalid: metadata.labels[...]:
  Invalid value: ...`); a change that makes enforce stricter is answered with warnings naming
  the existing pods that would violate it (at most 3000 looked at, for at most a second).
Labels that do not parse (from before this plugin) fail closed for enforce (`restricted`)
and open for audit and warn. Mirror and kube-system pods are not exempt, as upstream.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import TYPE_CHECKING, Any

from k8py.api import errors
from k8py.api.resources import Registry
from k8py.server.apiserver import podsecuritychecks as checks
from k8py.server.apiserver.podsecuritychecks import BASELINE, PRIVILEGED, RESTRICTED
from k8py.server.apiserver.storage import ObjectStore

if TYPE_CHECKING:
    from k8py.server.apiserver.admission import Attributes

Obj = dict[str, Any]

PREFIX = "pod-security.kubernetes.io/"
MODES = ("enforce", "audit", "warn")
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)  # least to most strict
# audit annotations (upstream's keys, under PREFIX)
ENFORCE_POLICY, AUDIT_VIOLATIONS, ERROR = (PREFIX + "enforce-policy", PREFIX + "audit-violations",
                                           PREFIX + "error")

# the pod subresources whose writes never change what the policy looks at
IGNORED_POD_SUBRESOURCES = frozenset({"exec", "attach", "binding", "eviction", "log",
                                      "portforward", "proxy", "status"})
# (group, plural) → where its pod template is
TEMPLATES = {("", "replicationcontrollers"): ("spec", "template"),
             ("", "podtemplates"): ("template",),
             ("apps", "replicasets"): ("spec", "template"),
             ("apps", "deployments"): ("spec", "template"),
             ("apps", "statefulsets"): ("spec", "template"),
             ("apps", "daemonsets"): ("spec", "template"),
             ("batch", "jobs"): ("spec", "template"),
             ("batch", "cronjobs"): ("spec", "jobTemplate", "spec", "template")}

NAMESPACE_POD_LIMIT = 3000
NAMESPACE_CHECK_SECONDS = 1.0
_VERSION = re.compile(r"v1\.([0-9]|[1-9][0-9]*)")
_INT64_MAX = 2 ** 63 - 1


@dataclasses.dataclass(frozen=True)
class LevelVersion:
    level: str
    minor: int | None = None  # v1.<minor>; None is latest

    def __str__(self) -> str:
        return f"{self.level}:{'latest' if self.minor is None else f'v1.{self.minor}'}"

    def violations(self, metadata: Obj, spec: Obj) -> list[checks.Violation]:
        return checks.evaluate(self.level, self.minor, metadata, spec)


DEFAULT = LevelVersion(PRIVILEGED)


@dataclasses.dataclass(frozen=True)
class Policy:
    enforce: LevelVersion = DEFAULT
    audit: LevelVersion = DEFAULT
    warn: LevelVersion = DEFAULT

    def fully_privileged(self) -> bool:
        return self.enforce.level == self.audit.level == self.warn.level == PRIVILEGED


# a label that does not parse: (field, value, what it must be)
LabelError = tuple[str, str, str]


def policy_from_labels(labels: dict[str, str] | None) -> tuple[Policy, list[LabelError]]:
    """A namespace's policy from its labels, and the labels that do not parse (upstream's
    PolicyToEvaluate over the default policy, privileged:latest everywhere)."""
    labels = labels or {}
    found: list[LabelError] = []
    modes = {}
    for mode in MODES:
        level, minor = PRIVILEGED, None
        if PREFIX + mode in labels:
            value = labels[PREFIX + mode]
            if value in LEVELS:
                level = value
            else:
                found.append((f"metadata.labels[{PREFIX}{mode}]", value,
                              "must be one of " + ", ".join(LEVELS)))
                level = RESTRICTED if mode == "enforce" else PRIVILEGED  # enforce fails closed
        if PREFIX + mode + "-version" in labels:
            value = labels[PREFIX + mode + "-version"]
            minor = parse_version(value)
            if minor is False:
                found.append((f"metadata.labels[{PREFIX}{mode}-version]", value,
                              'must be "latest" or "v1.x"'))
                minor = None
        modes[mode] = LevelVersion(level, minor)
    enforce, warn = modes["enforce"], modes["warn"]
    enforce_labelled = PREFIX + "enforce" in labels and labels[PREFIX + "enforce"] in LEVELS
    if PREFIX + "warn" not in labels and enforce_labelled and \
            LEVELS.index(enforce.level) > LEVELS.index(warn.level):
        modes["warn"] = LevelVersion(enforce.level, warn.minor
                                     if PREFIX + "warn-version" in labels else enforce.minor)
    return Policy(**modes), found


def parse_version(value: str) -> int | None | bool:
    """The minor of `v1.<n>`, None for `latest`, False when it is neither."""
    if value == "latest":
        return None
    match = _VERSION.fullmatch(value)
    if match is None or int(match.group(1)) > _INT64_MAX:
        return False
    return int(match.group(1))


def label_errors_message(found: list[LabelError]) -> str:
    """An ErrorList as upstream aggregates it: one message, or `[a, b]`."""
    messages = list(dict.fromkeys(f"{field}: {body(value, detail)}"
                                  for field, value, detail in found))
    return messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"


def body(value: str, detail: str) -> str:
    return f"Invalid value: {checks.go_quote(value)}: {detail}"


class PodSecurity:
    """The admission plugin: validating only (`admit` changes nothing)."""

    name = "PodSecurity"

    def __init__(self, registry: Registry, objects: ObjectStore):
        self.objects = objects
        self.namespaces = registry.get("", "v1", "namespaces")
        self.pods = registry.get("", "v1", "pods")

    async def admit(self, attributes: Attributes) -> Obj | None:
        return None

    async def validate(self, attributes: Attributes) -> None:
        if attributes.operation not in ("CREATE", "UPDATE"):
            return
        resource = attributes.resource
        key = (resource.group, resource.plural)
        if key == ("", "namespaces"):
            await self.validate_namespace(attributes)
        elif key == ("", "pods"):
            await self.validate_pod(attributes)
        elif key in TEMPLATES:
            await self.validate_template(attributes, TEMPLATES[key])

    # --- namespaces ------------------------------------------------------------------------

    async def validate_namespace(self, attributes: Attributes) -> None:
        if attributes.subresource:
            return
        namespace = attributes.object or {}
        policy, found = policy_from_labels(namespace.get("metadata", {}).get("labels"))
        if attributes.operation == "CREATE":
            if found:
                raise invalid(attributes.name or "", found)
            return
        old_policy, old_found = policy_from_labels(
            (attributes.old_object or {}).get("metadata", {}).get("labels"))
        if found and (not old_found or found != old_found):
            raise invalid(attributes.name or "", found)
        new, old = policy.enforce, old_policy.enforce
        if new == old or new.level == PRIVILEGED or (
                new.minor == old.minor and LEVELS.index(new.level) <= LEVELS.index(old.level)):
            return
        for warning in await self.existing_pod_warnings(namespace["metadata"]["name"], new):
            attributes.warn(warning)

    async def existing_pod_warnings(self, namespace: str, enforce: LevelVersion) -> list[str]:
        """Upstream's warnings about the pods a new enforce level would refuse: one per
        distinct set of reasons, naming the first pod (by name) and how many others."""
        deadline = time.monotonic() + NAMESPACE_CHECK_SECONDS
        try:
            pods, _, _ = await self.objects.list(self.pods, namespace)
        except errors.StatusError:
            return ["failed to list pods while checking new PodSecurity enforce level"]
        pods = prioritized(pods)
        total, checked = len(pods), min(len(pods), NAMESPACE_POD_LIMIT)
        by_reasons: dict[str, tuple[str, int]] = {}  # reasons → (first pod name, count)
        for index, pod in enumerate(pods[:checked]):
            found = enforce.violations(pod.get("metadata") or {}, pod.get("spec") or {})
            if found:
                reasons = checks.reasons(found)
                name = pod["metadata"]["name"]
                first, count = by_reasons.get(reasons, (name, 0))
                by_reasons[reasons] = (min(first, name), count + 1)
            if time.monotonic() > deadline:
                checked = index + 1
                break
        warnings = []
        if checked < total:
            warnings.append(f"new PodSecurity enforce level only checked against the first "
                            f"{checked} of {total} existing pods")
        if by_reasons:
            warnings.append(f"existing pods in namespace {checks.go_quote(namespace)} violate "
                            f"the new PodSecurity enforce level {checks.go_quote(str(enforce))}")
        return warnings + sorted(f"{named(first, count)}: {reasons}"
                                 for reasons, (first, count) in by_reasons.items())

    # --- pods and pod templates ------------------------------------------------------------

    async def validate_pod(self, attributes: Attributes) -> None:
        if attributes.subresource in IGNORED_POD_SUBRESOURCES:
            return
        try:
            namespace = await self.objects.get(self.namespaces, None, attributes.namespace)
        except errors.StatusError as exc:
            message = f'failed to lookup namespace "{attributes.namespace}"'
            attributes.annotate(ERROR, f"Internal error occurred: {message}: {exc.message}")
            raise errors.InternalError(f"Internal error occurred: {message}") from None
        policy, found = policy_from_labels(namespace["metadata"].get("labels"))
        if not found and policy.fully_privileged():
            attributes.annotate(ENFORCE_POLICY, str(DEFAULT))
            return
        pod = attributes.object or {}
        if attributes.operation == "UPDATE" and \
                not significant_update(pod, attributes.old_object or {}):
            return
        self.evaluate(attributes, policy, found, pod.get("metadata") or {},
                      pod.get("spec") or {}, enforce=True)

    async def validate_template(self, attributes: Attributes, path: tuple[str, ...]) -> None:
        if attributes.subresource:
            return
        try:
            namespace = await self.objects.get(self.namespaces, None, attributes.namespace)
        except errors.StatusError as exc:
            attributes.annotate(ERROR, f'failed to lookup namespace "{attributes.namespace}": '
                                       f"{exc.message}")
            return
        policy, found = policy_from_labels(namespace["metadata"].get("labels"))
        if not found and policy.warn.level == policy.audit.level == PRIVILEGED:
            return
        template: Any = attributes.object or {}
        for key in path:
            template = template.get(key) if isinstance(template, dict) else None
        if not isinstance(template, dict):
            return  # no pod template: nothing to check
        self.evaluate(attributes, policy, found, template.get("metadata") or {},
                      template.get("spec") or {}, enforce=False)

    def evaluate(self, attributes: Attributes, policy: Policy, found: list[LabelError],
                 metadata: Obj, spec: Obj, *, enforce: bool) -> None:
        """Upstream's EvaluatePod: refuse for enforce (pods only), annotate for audit, warn
        for warn when the write goes through; a level and version is evaluated once."""
        if found:
            attributes.annotate(ERROR, f"Failed to parse policy: {label_errors_message(found)}")
        results: dict[LevelVersion, list[checks.Violation]] = {}

        def violations(level: LevelVersion) -> list[checks.Violation]:
            if level not in results:
                results[level] = level.violations(metadata, spec)
            return results[level]

        refusal = None
        if enforce:
            attributes.annotate(ENFORCE_POLICY, str(policy.enforce))
            if violations(policy.enforce):
                name = attributes.name or ""
                whom = f'pods "{name}"' if name else "pods"
                refusal = errors.Forbidden(
                    f"{whom} is forbidden: violates PodSecurity "
                    f"{checks.go_quote(str(policy.enforce))}: "
                    f"{checks.details(violations(policy.enforce))}", name=name, kind="pods")
        if violations(policy.audit):
            attributes.annotate(AUDIT_VIOLATIONS, f"would violate PodSecurity "
                                                  f"{checks.go_quote(str(policy.audit))}: "
                                                  f"{checks.details(violations(policy.audit))}")
        if refusal is not None:
            raise refusal
        if violations(policy.warn):
            attributes.warn(f"would violate PodSecurity {checks.go_quote(str(policy.warn))}: "
                            f"{checks.details(violations(policy.warn))}")


def invalid(name: str, found: list[LabelError]) -> errors.Invalid:
    return errors.Invalid(
        f'Namespace "{name}" is invalid: {label_errors_message(found)}', name=name,
        kind="Namespace", causes=[{"reason": "FieldValueInvalid",
                                   "message": body(value, detail), "field": field}
                                  for field, value, detail in found])


def named(first: str, count: int) -> str:
    if count == 1:
        return first
    if count == 2:
        return f"{first} (and 1 other pod)"
    return f"{first} (and {count - 1} other pods)"


def prioritized(pods: list[Obj]) -> list[Obj]:
    """One pod per controller first, then the other replicas (upstream's order: a namespace
    with many replicas of few workloads is judged by all its workloads within the limit)."""
    first, rest, seen = [], [], set()
    for pod in pods:
        owner = next((ref.get("uid") for ref in pod["metadata"].get("ownerReferences") or ()
                      if ref.get("controller") is True), None)
        if owner is None or owner not in seen:
            first.append(pod)
            if owner is not None:
                seen.add(owner)
        else:
            rest.append(pod)
    return first + rest


def significant_update(pod: Obj, old: Obj) -> bool:
    """Whether a pod update changes what the policy looks at: upstream checks the images
    (the one mutable field of a container) and added containers, nothing else."""
    spec, old_spec = pod.get("spec") or {}, old.get("spec") or {}
    for key in ("containers", "initContainers"):
        new, before = spec.get(key) or [], old_spec.get(key) or []
        if len(new) != len(before) or any(a.get("image") != b.get("image")
                                          for a, b in zip(new, before)):
            return True
    previous = {c.get("name"): c for c in old_spec.get("ephemeralContainers") or ()}
    return any(c.get("name") not in previous or c.get("image") != previous[c.get("name")]
               .get("image") for c in spec.get("ephemeralContainers") or ())
