"""Authorization: may this user do this? Upstream's authorizer contract and request attributes.

Every request, over HTTP (`middleware`) or in process (`inprocess`), is described by
`Attributes` (upstream's authorizer.Attributes: user, verb, and either a resource request —
group, version, resource, subresource, namespace, name — or a non-resource path) and put to
the server's authorizer before anything else happens. An `Authorizer` answers ALLOW, DENY
or NO_OPINION with a reason; `Union` asks its members in order and the first ALLOW or DENY
decides (upstream's union authorizer), so `--authorization-mode Node,RBAC` is
`Union([PrivilegedGroup(), NodeAuthorizer, RBACAuthorizer])`. Members answer from memory
(caches of RBAC objects and of which pod is on which node), synchronously: a decision for a
cached rule set costs microseconds, not a store read.

A refusal is upstream's 403 (`forbidden`): `<resource>[.<group>] "<name>" is forbidden:
User "<u>" cannot <verb> resource "<r>[/<sub>]" in API group "<g>" in the namespace "<ns>"`
(or `at the cluster scope`), then `: <reason>` when the authorizers gave one; for paths,
`forbidden: User "<u>" cannot get path "/x"`. As upstream, `&`, `<` and `>` in that sentence
(not in the reason) are written as HTML entities.

`request_attributes` reads them from an HTTP request with upstream's RequestInfoFactory
(`requestinfo`, which the audit policy uses too).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Protocol


from k8py.api import errors
from k8py.server.apiserver import requestinfo
from k8py.server.apiserver.authn import User

ALLOW, DENY, NO_OPINION = "allow", "deny", "no-opinion"
PRIVILEGED_GROUP = "system:masters"
AUTHENTICATED, UNAUTHENTICATED = "system:authenticated", "system:unauthenticated"
ANONYMOUS = "system:anonymous"

#: the API server's own identity, for its caches and its own writes (upstream's loopback
#: client, `system:apiserver` in system:masters)
API_SERVER = User("system:apiserver", (PRIVILEGED_GROUP,))



class Mode(enum.Enum):
    ALWAYS_ALLOW = "AlwaysAllow"
    NODE = "Node"
    RBAC = "RBAC"


@dataclasses.dataclass(frozen=True)
class Attributes:
    """One request as the authorizers see it."""
    user: User
    verb: str
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    def groups(self) -> tuple[str, ...]:
        """The user's groups with `system:authenticated`, which every authenticated user
        has (upstream adds it at authentication)."""
        groups = self.user.groups
        if AUTHENTICATED in groups or UNAUTHENTICATED in groups or \
                self.user.name == ANONYMOUS:
            return groups
        return (*groups, AUTHENTICATED)


Decision = tuple[str, str]  # (ALLOW | DENY | NO_OPINION, reason)


class Authorizer(Protocol):
    def authorize(self, attributes: Attributes) -> Decision: ...


class AlwaysAllow:
    def authorize(self, attributes: Attributes) -> Decision:
        return ALLOW, ""


class PrivilegedGroup:
    """system:masters may do everything, whatever RBAC holds (upstream's
    privileged-group authorizer, ahead of the configured modes)."""

    def authorize(self, attributes: Attributes) -> Decision:
        if PRIVILEGED_GROUP in attributes.user.groups:
            return ALLOW, ""
        return NO_OPINION, ""


class Union:
    """The first member that allows or denies decides; reasons of the others are kept for
    the refusal, one per line, as upstream's union authorizer."""

    def __init__(self, members: Sequence[Authorizer]):
        self.members = list(members)

    def authorize(self, attributes: Attributes) -> Decision:
        reasons = []
        for member in self.members:
            decision, reason = member.authorize(attributes)
            if decision != NO_OPINION:
                return decision, reason
            if reason:
                reasons.append(reason)
        return NO_OPINION, "\n".join(reasons)


def _forbidden_message(attributes: Attributes) -> str:
    user = attributes.user.name
    if not attributes.resource_request:
        return f'User "{user}" cannot {attributes.verb} path "{attributes.path}"'
    resource = attributes.resource
    if attributes.subresource:
        resource += "/" + attributes.subresource
    where = f'in the namespace "{attributes.namespace}"' if attributes.namespace \
        else "at the cluster scope"
    return (f'User "{user}" cannot {attributes.verb} resource "{resource}" in API group '
            f'"{attributes.api_group}" {where}')


def _sanitized(text: str) -> str:
    """Upstream's responsewriters sanitizer: the message never reads as HTML."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def forbidden(attributes: Attributes, reason: str = "") -> errors.Forbidden:
    """Upstream's 403 for a request its authorizers did not allow."""
    message = _sanitized(_forbidden_message(attributes))
    if reason:
        message += ": " + reason
    return errors.forbidden(attributes.resource, attributes.name, message,
                            attributes.api_group)


def check(authorizer: Authorizer | None, attributes: Attributes) -> None:
    """Raise upstream's 403 unless `authorizer` allows (None: everything is allowed)."""
    if authorizer is None:
        return
    decision, reason = authorizer.authorize(attributes)
    if decision != ALLOW:
        raise forbidden(attributes, reason)


def allowed(authorizer: Authorizer | None, attributes: Attributes) -> bool:
    return authorizer is None or authorizer.authorize(attributes)[0] == ALLOW


def request_attributes(user: User, method: str, path: str,
                       query: Mapping[str, str]) -> Attributes:
    """Upstream's RequestInfo of an HTTP request (`requestinfo`), as authorizer
    attributes."""
    info = requestinfo.request_info(method, path, query)
    return Attributes(user, info.verb, info.resource_request, info.api_group,
                      info.api_version, info.resource, info.subresource, info.namespace,
                      info.name, path)


