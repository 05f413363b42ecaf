"""RBAC: Roles, ClusterRoles and their bindings decide, as upstream's RBAC authorizer.

The API server keeps the four RBAC kinds in informer caches (`Policy`, fed by the
in-process transport as the API server itself) and answers from them without a store read:

- `Policy.rules_for(user, namespace)`: the (source, rule) pairs that apply to a user — every
  ClusterRoleBinding naming the user, their group or their service account, then in
  `namespace` every RoleBinding naming them (a RoleBinding may refer to a ClusterRole; its
  rules then apply in that namespace only). A binding to a missing role contributes the
  error upstream reports (`clusterrole.rbac.authorization.k8s.io "x" not found`). The
  result is kept per (user, groups, namespace) until any RBAC object changes.
- `RBACAuthorizer`: allows when some rule matches (upstream's RuleAllows: verb, API group,
  resource or `resource/subresource` or `*/subresource`, resourceNames when the rule has
  them, or a nonResourceURL, exactly or by a trailing `*` prefix), with upstream's reason
  `RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to Group "g"`; otherwise no
  opinion (RBAC never denies), with the resolution errors as the reason.

Escalation checks on role and binding writes use the same rules (`rbacescalation`).
The aggregated ClusterRoles' rules are written into them by the ClusterRole aggregation
controller, as upstream; the authorizer reads roles as stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.informer import Informer
from k8py.server.apiserver.authz import ALLOW, NO_OPINION, Attributes, Decision

log = logging.getLogger(__name__)

ROLES = builtin("rbac.authorization.k8s.io/v1", "roles")
ROLE_BINDINGS = builtin("rbac.authorization.k8s.io/v1", "rolebindings")
CLUSTER_ROLES = builtin("rbac.authorization.k8s.io/v1", "clusterroles")
CLUSTER_ROLE_BINDINGS = builtin("rbac.authorization.k8s.io/v1", "clusterrolebindings")
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
MAX_CACHED_USERS = 4096


@dataclasses.dataclass(frozen=True)
class Rule:
    """A PolicyRule, as sets for matching (the stored rule is kept for display)."""
    verbs: frozenset[str]
    groups: frozenset[str]
    resources: tuple[str, ...]
    names: frozenset[str]
    urls: tuple[str, ...]
    source: dict[str, Any] = dataclasses.field(compare=False, hash=False)

    @classmethod
    def of(cls, rule: dict[str, Any]) -> "Rule":
        return cls(frozenset(rule.get("verbs") or ()), frozenset(rule.get("apiGroups") or ()),
                   tuple(rule.get("resources") or ()), frozenset(rule.get("resourceNames") or ()),
                   tuple(rule.get("nonResourceURLs") or ()), rule)

    def allows(self, attributes: Attributes) -> bool:
        if not ("*" in self.verbs or attributes.verb in self.verbs):
            return False
        if not attributes.resource_request:
            return any(url_matches(url, attributes.path) for url in self.urls)
        if not ("*" in self.groups or attributes.api_group in self.groups):
            return False
        if not resource_matches(self.resources, attributes.resource, attributes.subresource):
            return False
        return not self.names or attributes.name in self.names


def resource_matches(resources: Iterable[str], resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for candidate in resources:
        if candidate == "*" or candidate == combined:
            return True
        if subresource and candidate == "*/" + subresource:
            return True
    return False


def url_matches(rule_url: str, path: str) -> bool:
    if rule_url == "*" or rule_url == path:
        return True
    # upstream trims every trailing `*` (strings.TrimRight): `/apis/**` is `/apis/` too
    return rule_url.endswith("*") and path.startswith(rule_url.rstrip("*"))


def service_account_user(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def _subject_names(subject: dict[str, Any], binding_namespace: str) -> str:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "ServiceAccount":
        return f'{kind} "{name}/{subject.get("namespace") or binding_namespace}"'
    return f'{kind} "{name}"'


def _applies(subject: dict[str, Any], user: str, groups: tuple[str, ...],
             namespace: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user
    if kind == "Group":
        return subject.get("name") in groups
    if kind == "ServiceAccount":
        if not user.startswith(SERVICE_ACCOUNT_PREFIX):
            return False  # the common case, without building the account's user name
        account_namespace = subject.get("namespace") or namespace
        return bool(account_namespace) and \
            user == service_account_user(account_namespace, subject.get("name", ""))
    return False


def _applying(bindings: list[dict[str, Any]], user: str, groups: tuple[str, ...],
              namespace: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The bindings naming the user, each with the first subject that does. A miss in
    `Policy.grants` tries every ClusterRoleBinding, and few name the user: this loop is
    the cost of a cold decision, so it does nothing more per binding."""
    for binding in bindings:
        for subject in binding.get("subjects") or ():
            if isinstance(subject, dict) and _applies(subject, user, groups, namespace):
                yield binding, subject
                break


@dataclasses.dataclass(frozen=True)
class Grant:
    """Rules reaching a user through one binding subject, and how upstream describes it."""
    source: str
    rules: tuple[Rule, ...]


class Policy:
    """The RBAC objects in memory, and the rules that apply to whom."""

    def __init__(self, client: Client):
        self.informers = {resource.plural: Informer(client, resource) for resource in
                          (ROLES, ROLE_BINDINGS, CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS)}
        for informer in self.informers.values():
            informer.add_handlers(self._changed, lambda old, new: self._changed(new),
                                  self._changed)
        self._compiled: dict[tuple[str, str | None, str], tuple[Rule, ...]] = {}
        self._grants: dict[tuple[str, tuple[str, ...], str], tuple[list[Grant], list[str]]] = {}
        self._tasks: list[asyncio.Task] = []
        self.synced = asyncio.Event()

    def _changed(self, obj: dict[str, Any]) -> None:
        self._compiled.clear()
        self._grants.clear()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(informer.run(), name=f"rbac-{plural}")
                       for plural, informer in self.informers.items()]
        await asyncio.gather(*(informer.synced.wait() for informer in self.informers.values()))
        self.synced.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def role_rules(self, kind: str, name: str, namespace: str) -> tuple[Rule, ...] | str:
        """A roleRef's rules, or upstream's error text when the role does not exist."""
        key = (kind, namespace if kind == "Role" else None, name)
        rules = self._compiled.get(key)
        if rules is not None:
            return rules
        if kind == "ClusterRole":
            role = self.informers["clusterroles"].get_by_name(None, name)
            missing = f'clusterrole.rbac.authorization.k8s.io "{name}" not found'
        elif kind == "Role":
            role = self.informers["roles"].get_by_name(namespace, name)
            missing = f'role.rbac.authorization.k8s.io "{name}" not found'
        else:
            return f'unsupported role reference kind: "{kind}"'
        if role is None:
            return missing
        rules = tuple(Rule.of(rule) for rule in role.get("rules") or () if isinstance(rule, dict))
        self._compiled[key] = rules
        return rules

    def grants(self, user: str, groups: tuple[str, ...], namespace: str
               ) -> tuple[list[Grant], list[str]]:
        """What reaches the user in `namespace` ("" for cluster scope), and the errors of
        bindings whose role is missing: upstream's VisitRulesFor, in its order."""
        key = (user, groups, namespace)
        cached = self._grants.get(key)
        if cached is not None:
            return cached
        grants: list[Grant] = []
        problems: list[str] = []
        for binding, subject in _applying(self.informers["clusterrolebindings"].list(),
                                          user, groups, ""):
            self._visit(binding, subject, "ClusterRoleBinding", "", grants, problems)
        if namespace:
            for binding, subject in _applying(self.informers["rolebindings"].list(namespace),
                                              user, groups, namespace):
                self._visit(binding, subject, "RoleBinding", namespace, grants, problems)
        if len(self._grants) >= MAX_CACHED_USERS:
            self._grants.clear()
        self._grants[key] = (grants, problems)
        return grants, problems

    def _visit(self, binding: dict[str, Any], subject: dict[str, Any], kind: str,
               namespace: str, grants: list[Grant], problems: list[str]) -> None:
        ref = binding.get("roleRef") or {}
        rules = self.role_rules(ref.get("kind", ""), ref.get("name", ""), namespace)
        if isinstance(rules, str):
            problems.append(rules)
            return
        name = binding["metadata"]["name"]
        described = f'"{name}/{namespace}"' if namespace else f'"{name}"'
        source = (f'{kind} {described} of {ref.get("kind")} "{ref.get("name")}" to '
                  f'{_subject_names(subject, namespace)}')
        grants.append(Grant(source, rules))

    def rules_for(self, user: str, groups: tuple[str, ...], namespace: str
                  ) -> tuple[list[Rule], list[str]]:
        grants, problems = self.grants(user, groups, namespace)
        return [rule for grant in grants for rule in grant.rules], problems


def aggregate_errors(problems: list[str]) -> str:
    """utilerrors.NewAggregate's text: one error as itself, several in brackets; a text
    repeated (two bindings of one missing role) is said once, and one distinct text is
    said without brackets."""
    distinct = list(dict.fromkeys(problems))
    return distinct[0] if len(distinct) == 1 else "[" + ", ".join(distinct) + "]"


class RBACAuthorizer:
    def __init__(self, policy: Policy):
        self.policy = policy

    def authorize(self, attributes: Attributes) -> Decision:
        grants, problems = self.policy.grants(attributes.user.name, attributes.groups(),
                                              attributes.namespace)
        for grant in grants:
            for rule in grant.rules:
                if rule.allows(attributes):
                    return ALLOW, f"RBAC: allowed by {grant.source}"
        if problems:
            return NO_OPINION, f"RBAC: {aggregate_errors(problems)}"
        return NO_OPINION, ""


def matching_rules(rules: Iterable[Rule], attributes: Attributes) -> Iterator[Rule]:
    return (rule for rule in rules if rule.allows(attributes))
