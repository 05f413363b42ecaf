"""The audit policy (`--audit-policy-file`): upstream's `audit.k8s.io/v1` Policy, read from
YAML or JSON, checked as upstream checks it, and evaluated per request.

Evaluation (upstream's policyRuleEvaluator): rules in order, the first that matches gives
the level (None, Metadata, Request, RequestResponse), the stages not to log (the rule's
`omitStages` united with the policy's) and whether to drop managedFields from logged objects
(the rule's `omitManagedFields`, else the policy's). No rule matching is level None. Every
field given in a rule must match, an empty one matches anything:
- `users` the user's name; `userGroups` any of the user's groups (a request without a user,
  one refused by authentication, matches neither);
- `verbs` the request's verb (`requestinfo`: get, list, watch, create, ...; for non-resource
  requests the lower-cased HTTP method);
- `resources`/`namespaces`: only resource requests; `namespaces` lists namespaces, "" being
  cluster-scoped requests; `resources` is a list of `{group, resources, resourceNames}`
  ("" is the core group) where a resource is `pods`, `pods/log` (a subresource), `*`
  (everything in the group), `*/scale` or `pods/*`, and `resourceNames` narrows to names;
- `nonResourceURLs`: only non-resource requests; a path, `*`, or a prefix ending in `*`.

Loading follows upstream's LoadPolicyFromBytes: apiVersion `audit.k8s.io/v1` and kind
`Policy` are required; unknown fields are warned about and ignored (upstream's lenient
fallback); field errors are upstream's messages (`rules[0].level: Unsupported value: ...`);
a policy with no rules is refused. `PolicyError` carries the message the CLI prints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import yaml

from k8py.api.meta import DNS1123_SUBDOMAIN
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.requestinfo import RequestInfo

log = logging.getLogger(__name__)

NONE, METADATA, REQUEST, REQUEST_RESPONSE = "None", "Metadata", "Request", "RequestResponse"
LEVELS = (NONE, METADATA, REQUEST, REQUEST_RESPONSE)  # in increasing order
RANK = {level: rank for rank, level in enumerate(LEVELS)}
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
API_VERSION = "audit.k8s.io/v1"

_SUBDOMAIN_MESSAGE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                      "characters, '-' or '.', and must start and end with an alphanumeric "
                      "character (e.g. 'example.com', regex used for validation is "
                      "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


class PolicyError(ValueError):
    """A policy that cannot be used; the message is upstream's."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the policy says of one request (upstream's RequestAuditConfig)."""
    level: str
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False


@dataclasses.dataclass(frozen=True)
class GroupResources:
    group: str = ""
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Rule:
    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    decision: Decision = Decision(NONE)

    def matches(self, user: User | None, info: RequestInfo) -> bool:
        if self.users and (user is None or user.name not in self.users):
            return False
        if self.user_groups and (user is None or
                                 not any(g in self.user_groups for g in _groups(user))):
            return False
        if self.verbs and info.verb not in self.verbs:
            return False
        if self.namespaces or self.resources:
            return info.resource_request and self._matches_resource(info)
        if self.non_resource_urls:
            return not info.resource_request and any(
                _path_matches(info.path, spec) for spec in self.non_resource_urls)
        return True

    def _matches_resource(self, info: RequestInfo) -> bool:
        if self.namespaces and info.namespace not in self.namespaces:
            return False
        if not self.resources:
            return True
        combined = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
        for entry in self.resources:
            if entry.group != info.api_group:
                continue
            if not entry.resources:
                return True
            if entry.resource_names and info.name not in entry.resource_names:
                continue
            for spec in entry.resources:
                if spec in (combined, "*"):
                    return True
                if info.subresource and spec.startswith("*/") and spec[2:] == info.subresource:
                    return True
                if spec.endswith("/*") and spec[:-2] == info.resource:
                    return True
        return False


def _groups(user: User) -> tuple[str, ...]:
    # upstream matches the groups after authentication added system:authenticated
    groups = user.groups
    if user.name == "system:anonymous" or "system:authenticated" in groups:
        return groups
    return (*groups, "system:authenticated")


def _path_matches(path: str, spec: str) -> bool:
    return spec == "*" or spec == path or (spec.endswith("*") and
                                           path.startswith(spec.rstrip("*")))


@dataclasses.dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False

    def evaluate(self, user: User | None, info: RequestInfo) -> Decision:
        for rule in self.rules:
            if rule.matches(user, info):
                return rule.decision
        return Decision(NONE, self.omit_stages, self.omit_managed_fields)


# --- loading ----------------------------------------------------------------------------------

_POLICY_FIELDS = {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
_RULE_FIELDS = {"level", "users", "userGroups", "verbs", "resources", "namespaces",
                "nonResourceURLs", "omitStages", "omitManagedFields"}
_GROUP_FIELDS = {"group", "resources", "resourceNames"}


def load(path: str) -> Policy:
    """The policy in the file at `path` (YAML or JSON)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PolicyError(f'failed to read file path "{path}": {exc.strerror}') from None
    try:
        return parse(data)
    except PolicyError as exc:
        raise PolicyError(f"{exc}: from file {path}") from None


def parse(data: bytes | str) -> Policy:
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise PolicyError(f"failed decoding: invalid YAML{at}") from None
    if not isinstance(document, dict):
        raise PolicyError("failed decoding: the policy must be an object")
    kind, api_version = document.get("kind"), document.get("apiVersion")
    if not kind:
        raise PolicyError(f"failed decoding: Object 'Kind' is missing in "
                          f"'{json.dumps(document, separators=(',', ':'), default=str)}'")
    if api_version != API_VERSION or kind != "Policy":
        raise PolicyError(f'failed decoding: no kind "{kind}" is registered for version '
                          f'"{api_version}"')
    unknown = _unknown_fields(document)
    if unknown:
        log.warning("Audit policy contains errors, falling back to lenient decoding: "
                    "unknown field%s %s", "s" if len(unknown) > 1 else "",
                    ", ".join(f'"{u}"' for u in unknown))
    problems: list[str] = []
    omit_stages = _stages(document.get("omitStages"), "omitStages", problems)
    omit_managed = _boolean(document.get("omitManagedFields"), "omitManagedFields")
    rules_doc = document.get("rules") or []
    if not isinstance(rules_doc, list):
        raise PolicyError("failed decoding: rules: expected a list")
    rules = [_rule(r, f"rules[{i}]", omit_stages, bool(omit_managed), problems)
             for i, r in enumerate(rules_doc)]
    if problems:
        raise PolicyError(problems[0] if len(problems) == 1 else f"[{', '.join(problems)}]")
    if not rules:
        raise PolicyError("loaded illegal policy with 0 rules")
    return Policy(tuple(rules), omit_stages, bool(omit_managed))


def _unknown_fields(document: dict) -> list[str]:
    unknown = [k for k in document if k not in _POLICY_FIELDS]
    for i, rule in enumerate(document.get("rules") or []):
        if isinstance(rule, dict):
            unknown += [f"rules[{i}].{k}" for k in rule if k not in _RULE_FIELDS]
            for j, entry in enumerate(rule.get("resources") or []):
                if isinstance(entry, dict):
                    unknown += [f"rules[{i}].resources[{j}].{k}" for k in entry
                                if k not in _GROUP_FIELDS]
    return unknown


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"failed decoding: {where}: expected a list of strings")
    return tuple(value)


def _boolean(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise PolicyError(f"failed decoding: {where}: expected true or false")


def _stages(value: Any, where: str, problems: list[str]) -> frozenset[str]:
    stages = _strings(value, where)
    for i, stage in enumerate(stages):
        if stage not in STAGES:
            problems.append(f'{where}[{i}]: Invalid value: "{stage}": allowed stages are '
                            + ",".join(STAGES))
    return frozenset(stages)


def _rule(document: Any, where: str, policy_stages: frozenset[str], policy_omit_managed: bool,
          problems: list[str]) -> Rule:
    if not isinstance(document, dict):
        raise PolicyError(f"failed decoding: {where}: expected an object")
    level = document.get("level") or ""
    if not isinstance(level, str):
        raise PolicyError(f"failed decoding: {where}.level: expected a string")
    if not level:
        problems.append(f"{where}.level: Required value")
    elif level not in LEVELS:
        problems.append(f'{where}.level: Unsupported value: "{level}": supported values: '
                        + ", ".join(f'"{v}"' for v in LEVELS))
    urls = _strings(document.get("nonResourceURLs"), f"{where}.nonResourceURLs")
    for i, url in enumerate(urls):
        if url == "*":
            continue
        if not url.startswith("/"):
            problems.append(f'{where}.nonResourceURLs[{i}]: Invalid value: "{url}": '
                            "non-resource URL rules must begin with a '/' character")
        if url and "*" in url[:-1]:
            problems.append(f'{where}.nonResourceURLs[{i}]: Invalid value: "{url}": '
                            "non-resource URL wildcards '*' must be the final character of "
                            "the rule")
    resources = []
    entries = document.get("resources") or []
    if not isinstance(entries, list):
        raise PolicyError(f"failed decoding: {where}.resources: expected a list")
    for j, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PolicyError(f"failed decoding: {where}.resources[{j}]: expected an object")
        group = entry.get("group") or ""
        if not isinstance(group, str):
            raise PolicyError(f"failed decoding: {where}.resources[{j}].group: expected a "
                              "string")
        names = _strings(entry.get("resourceNames"), f"{where}.resources[{j}].resourceNames")
        plurals = _strings(entry.get("resources"), f"{where}.resources[{j}].resources")
        if group and (len(group) > 253 or not DNS1123_SUBDOMAIN.match(group)):
            problems.append(f'{where}.resources.group: Invalid value: "{group}": '
                            + (_SUBDOMAIN_MESSAGE if len(group) <= 253
                               else "must be no more than 253 characters"))
        if names and not plurals:
            problems.append(f"{where}.resources.resourceNames: Invalid value: "
                            f"{_go_strings(names)}: using resourceNames requires at least "
                            "one resource")
        resources.append(GroupResources(group, plurals, names))
    namespaces = _strings(document.get("namespaces"), f"{where}.namespaces")
    if urls and (resources or namespaces):
        problems.append(f"{where}.nonResourceURLs: Invalid value: {_go_strings(urls)}: rules "
                        "cannot apply to both regular resources and non-resource URLs")
    stages = _stages(document.get("omitStages"), f"{where}.omitStages", problems)
    omit_managed = _boolean(document.get("omitManagedFields"), f"{where}.omitManagedFields")
    decision = Decision(level, stages | policy_stages,
                        policy_omit_managed if omit_managed is None else omit_managed)
    return Rule(level, _strings(document.get("users"), f"{where}.users"),
                _strings(document.get("userGroups"), f"{where}.userGroups"),
                _strings(document.get("verbs"), f"{where}.verbs"), tuple(resources),
                namespaces, urls, decision)


def _go_strings(values: tuple[str, ...]) -> str:
    """A []string as Go's %#v prints it, as upstream's field errors show it."""
    return "[]string{" + ", ".join(json.dumps(v) for v in values) + "}"
