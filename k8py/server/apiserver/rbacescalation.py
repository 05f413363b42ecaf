"""No one grants what they do not hold: upstream's RBAC escalation and bind checks.

Writing a Role or ClusterRole (create, update, patch, apply) is allowed when the writer is
in system:masters, may `escalate` that role (authorizer), or already holds every rule in
it — in the role's namespace for a Role, cluster-wide for a ClusterRole
(`ConfirmNoEscalation`: each rule broken down to one verb, group, resource and name, each
covered by a rule the writer holds); a ClusterRole that has (or had) an aggregationRule
then needs every right (`FULL_AUTHORITY`) besides, as upstream's ClusterRole storage. The
`escalate` check names the role only when the URL does (not on a create, as upstream's
RequestInfo). Writing a RoleBinding or ClusterRoleBinding is allowed when the writer may
`bind` the role it refers to, or holds every rule of that role. A change that touches only
what the garbage collector writes (ownerReferences, finalizers) is never checked.

Refusals are upstream's 403: `roles.rbac.authorization.k8s.io "r" is forbidden: user "u"
(groups=["g1" "g2"]) is attempting to grant RBAC permissions not currently held:` and the
missing rules, one per line in upstream's compact form
(`{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}`), sorted.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors
from k8py.server.apiserver import admission, authz
from k8py.server.apiserver.authz import Attributes, Authorizer
from k8py.server.apiserver.rbac import Policy, Rule, aggregate_errors

GROUP = "rbac.authorization.k8s.io"
ROLE_KINDS = {"roles": "Role", "clusterroles": "ClusterRole"}
BINDING_KINDS = {"rolebindings": "roles", "clusterrolebindings": "clusterroles"}
_REF_RESOURCES = {"Role": "roles", "ClusterRole": "clusterroles"}
#: what may set an aggregationRule: everything, on every resource and path
FULL_AUTHORITY = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                  {"verbs": ["*"], "nonResourceURLs": ["*"]}]


def _go_strings(values: list[str]) -> str:
    """Go's %q of a []string: `["a" "b"]`."""
    return "[" + " ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "]"


def compact_string(rule: dict[str, Any]) -> str:
    parts = []
    for field, label in (("apiGroups", "APIGroups"), ("resources", "Resources"),
                         ("nonResourceURLs", "NonResourceURLs"),
                         ("resourceNames", "ResourceNames"), ("verbs", "Verbs")):
        if rule.get(field):
            parts.append(f"{label}:{_go_strings(list(rule[field]))}")
    return "{" + ", ".join(parts) + "}"


def breakdown(rule: dict[str, Any]) -> list[dict[str, Any]]:
    """One rule per verb, group, resource and name (upstream's BreakdownRule)."""
    out = []
    verbs = rule.get("verbs") or []
    for group in rule.get("apiGroups") or []:
        for resource in rule.get("resources") or []:
            names = rule.get("resourceNames") or []
            if names:
                for name in names:
                    out.extend({"verbs": [verb], "apiGroups": [group], "resources": [resource],
                                "resourceNames": [name]} for verb in verbs)
            else:
                out.extend({"verbs": [verb], "apiGroups": [group], "resources": [resource]}
                           for verb in verbs)
    for url in rule.get("nonResourceURLs") or []:
        out.extend({"verbs": [verb], "nonResourceURLs": [url]} for verb in verbs)
    return out


def _resources_cover(owner: tuple[str, ...], wanted: list[str]) -> bool:
    if "*" in owner:
        return True
    for path in wanted:
        if path in owner:
            continue
        if "/" not in path or "*/" + path.split("/", 1)[1] not in owner:
            return False
    return True


def _urls_cover(owner: tuple[str, ...], wanted: list[str]) -> bool:
    return all(any(url == have or (have.endswith("*") and url.startswith(have.rstrip("*")))
                   for have in owner) for url in wanted)


def covers(owner: Rule, wanted: dict[str, Any]) -> bool:
    """upstream's ruleCovers for one broken-down rule."""
    verbs = wanted.get("verbs") or []
    groups = wanted.get("apiGroups") or []
    names = wanted.get("resourceNames") or []
    return (("*" in owner.verbs or all(v in owner.verbs for v in verbs))
            and ("*" in owner.groups or all(g in owner.groups for g in groups))
            and _resources_cover(owner.resources, wanted.get("resources") or [])
            and _urls_cover(owner.urls, wanted.get("nonResourceURLs") or [])
            and (not owner.names if not names else
                 (not owner.names or all(n in owner.names for n in names))))


def missing_rules(owned: list[Rule], rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [piece for rule in rules for piece in breakdown(rule)
            if not any(covers(have, piece) for have in owned)]


def compact(missing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules for one group and resource with no names merged across verbs (upstream's
    CompactRules, which appends: a verb missing twice is listed twice); the rest as they
    are."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for rule in missing:
        if rule.get("resourceNames") or rule.get("nonResourceURLs"):
            out.append(rule)
            continue
        key = (rule["apiGroups"][0], rule["resources"][0])
        if key in merged:
            merged[key]["verbs"].extend(rule["verbs"])
        else:
            merged[key] = {"verbs": list(rule["verbs"]), "apiGroups": list(rule["apiGroups"]),
                           "resources": list(rule["resources"])}
            out.append(merged[key])
    return out


class RBACEscalation:
    """The checks as a validating admission plugin."""

    name = "RBACEscalation"

    def __init__(self, policy: Policy, authorizer: Authorizer):
        self.policy = policy
        self.authorizer = authorizer

    async def admit(self, attributes: admission.Attributes) -> dict[str, Any] | None:
        return None

    async def validate(self, attributes: admission.Attributes) -> None:
        resource = attributes.resource
        if resource.group != GROUP or attributes.operation not in (admission.CREATE,
                                                                   admission.UPDATE):
            return
        if attributes.subresource or attributes.user is None or attributes.object is None:
            return
        user = attributes.user
        if authz.PRIVILEGED_GROUP in user.groups:
            return
        if _only_gc_fields(attributes.object, attributes.old_object):
            return
        namespace = attributes.namespace or ""
        name = attributes.name or (attributes.object.get("metadata") or {}).get("name", "")
        if resource.plural in ROLE_KINDS:
            self._check_role(attributes, namespace, name)
        elif resource.plural in BINDING_KINDS:
            self._check_binding(attributes, namespace, name)

    def _check_role(self, attributes: admission.Attributes, namespace: str, name: str) -> None:
        resource = attributes.resource.plural
        # upstream asks with the URL's name (RequestInfo), which a create does not have
        url_name = "" if attributes.operation == admission.CREATE else name
        if authz.allowed(self.authorizer, Attributes(
                attributes.user, "escalate", True, GROUP, "v1", resource, "", namespace,
                url_name)):
            return
        obj = attributes.object
        rules = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
        self._confirm(attributes, resource, name, namespace, rules)
        # an aggregationRule gathers anything, and keeps a role from being tightened: whoever
        # writes a role that has one (or had one) needs every right
        if _aggregates(obj) or _aggregates(attributes.old_object or {}):
            owned, _ = self.policy.rules_for(attributes.user.name,
                                             Attributes(attributes.user, "").groups(), "")
            if missing_rules(owned, FULL_AUTHORITY):
                raise errors.forbidden(resource, name, "must have cluster-admin privileges to "
                                       "use the aggregationRule", GROUP)

    def _check_binding(self, attributes: admission.Attributes, namespace: str,
                       name: str) -> None:
        resource = attributes.resource.plural
        ref = attributes.object.get("roleRef") or {}
        ref_resource = _REF_RESOURCES.get(ref.get("kind", ""), "")
        if ref_resource and authz.allowed(self.authorizer, Attributes(
                attributes.user, "bind", True, GROUP, "v1", ref_resource, "", namespace,
                ref.get("name", ""))):
            return
        rules = self.policy.role_rules(ref.get("kind", ""), ref.get("name", ""), namespace)
        if isinstance(rules, str):
            raise errors.forbidden(resource, name, rules, GROUP)
        self._confirm(attributes, resource, name, namespace, [r.source for r in rules])

    def _confirm(self, attributes: admission.Attributes, resource: str, name: str,
                 namespace: str, rules: list[dict[str, Any]]) -> None:
        user = attributes.user
        groups = authz.Attributes(user, "").groups()
        owned, problems = self.policy.rules_for(user.name, groups, namespace)
        missing = missing_rules(owned, rules)
        if not missing:
            return
        lines = sorted({compact_string(rule) for rule in compact(missing)})
        message = (f'user "{user.name}" (groups={_go_strings(list(groups))}) is attempting '
                   "to grant RBAC permissions not currently held:\n" + "\n".join(lines))
        if problems:
            message += f"; resolution errors: [{aggregate_errors(problems)}]"
        raise errors.forbidden(resource, name, message, GROUP)


def _aggregates(role: dict[str, Any]) -> bool:
    rule = role.get("aggregationRule")
    return isinstance(rule, dict) and bool(rule.get("clusterRoleSelectors"))


def _only_gc_fields(obj: dict[str, Any], old: dict[str, Any] | None) -> bool:
    if old is None:
        return False

    def without_gc(o: dict[str, Any]) -> dict[str, Any]:
        metadata = {k: v for k, v in (o.get("metadata") or {}).items()
                    if k not in ("ownerReferences", "finalizers", "resourceVersion",
                                 "managedFields", "generation")}
        return {**o, "metadata": metadata}

    return without_gc(obj) == without_gc(old)
