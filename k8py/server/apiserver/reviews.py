"""Reviews: requests that are answered, never stored.

Authorization (authorization.k8s.io/v1), answered by the server's authorizers
(`authorization.Authorization`, an `AccessReviewer`):
- SelfSubjectAccessReview (`kubectl auth can-i`): may the asking user do this;
- SubjectAccessReview (a webhook, a kubelet or a controller asking about someone else; a
  user or a group is required) and LocalSubjectAccessReview (the same, within the URL's
  namespace, which the resource attributes must name);
- SelfSubjectRulesReview (`kubectl auth can-i --list`): the rules that apply to the asking
  user in a namespace.
`status.allowed`, `status.reason` (the authorizer's: `RBAC: allowed by ...`), `denied` only
for an explicit denial (RBAC never denies). Without an access reviewer (a store served
without authorization) everything is allowed. Validation and messages are upstream's
(pkg/apis/authorization/validation, the reviews' REST storage).

Authentication (authentication.k8s.io/v1):
- SelfSubjectReview (`kubectl auth whoami`): the authenticated user's name, uid, groups (with
  `system:authenticated`, as upstream adds it) and extras;
- TokenReview: whether a bearer token is good here, and whose it is (the token file's users,
  service-account tokens with upstream's audience rules: `spec.audiences`, or the API
  server's own, must meet the token's; `status.audiences` says which did). The token is
  never logged nor echoed in errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from k8py.api import errors, meta
from k8py.api.resources import Resource
from k8py.server.apiserver import authz
from k8py.server.apiserver.authn import User

# (token, audiences wanted or None) -> (user or None, audiences the token is good for)
TokenReviewer = Callable[[str, list[str] | None], Awaitable[tuple[User | None, list[str]]]]

REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
           ("authorization.k8s.io", "selfsubjectrulesreviews"),
           ("authorization.k8s.io", "subjectaccessreviews"),
           ("authorization.k8s.io", "localsubjectaccessreviews"),
           ("authentication.k8s.io", "selfsubjectreviews"),
           ("authentication.k8s.io", "tokenreviews")}



class AccessReviewer(Protocol):
    async def decide(self, attributes: authz.Attributes) -> authz.Decision: ...

    async def rules_review(self, user: User, namespace: str) -> dict[str, Any]: ...


def everything() -> dict[str, Any]:
    """A SelfSubjectRulesReview's status for a user who may do everything."""
    return {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False}


class _AllowEverything:
    async def decide(self, attributes: authz.Attributes) -> authz.Decision:
        return authz.ALLOW, ""

    async def rules_review(self, user: User, namespace: str) -> dict[str, Any]:
        return everything()


ALLOW_EVERYTHING = _AllowEverything()
_ONE_OF = "exactly one of nonResourceAttributes or resourceAttributes must be specified"


async def answer(resource: Resource, body: Any, user: User | None, namespace: str | None,
                 token_reviewer: TokenReviewer,
                 access_reviewer: AccessReviewer = ALLOW_EVERYTHING) -> dict[str, Any]:
    """The review, answered in its `status`."""
    review = meta.check_type(resource, body if body is not None else {})
    if user is None:
        raise errors.Unauthorized("Unauthorized")
    spec = review.get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise errors.BadRequest("spec must be an object")
    spec = spec or {}
    plural = resource.plural
    if plural == "selfsubjectreviews":
        review["status"] = {"userInfo": user.info()}
    elif plural == "tokenreviews":
        review["status"] = await _token_review(resource, spec, token_reviewer)
    elif plural == "selfsubjectrulesreviews":
        if not spec.get("namespace"):
            raise errors.BadRequest("no namespace on request")
        review["status"] = await access_reviewer.rules_review(user, spec["namespace"])
    else:
        _check_access_review(resource, review, spec, namespace)
        decision, reason = await access_reviewer.decide(_access_attributes(plural, spec, user))
        status: dict[str, Any] = {"allowed": decision == authz.ALLOW}
        if decision == authz.DENY:
            status["denied"] = True
        if reason:
            status["reason"] = reason
        review["status"] = status
    review["metadata"] = {**_metadata(review), "creationTimestamp": None}
    return review


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _access_attributes(plural: str, spec: dict[str, Any], user: User) -> authz.Attributes:
    """Whom and what an access review asks about."""
    if plural != "selfsubjectaccessreviews":
        extra = spec.get("extra") if isinstance(spec.get("extra"), dict) else {}
        user = User(str(spec.get("user") or ""), tuple(_strings(spec.get("groups"))),
                    str(spec.get("uid") or ""),
                    {str(k): _strings(v) for k, v in extra.items()})
    resource = spec.get("resourceAttributes")
    if isinstance(resource, dict):
        def text(key: str) -> str:
            value = resource.get(key)
            return value if isinstance(value, str) else ""
        return authz.Attributes(user, text("verb"), True, text("group"), text("version"),
                                text("resource"), text("subresource"), text("namespace"),
                                text("name"))
    non_resource = spec.get("nonResourceAttributes") or {}
    return authz.Attributes(user, str(non_resource.get("verb") or ""), resource_request=False,
                            path=str(non_resource.get("path") or ""))


def _metadata(review: dict[str, Any]) -> dict[str, Any]:
    metadata = review.get("metadata")
    return dict(metadata) if isinstance(metadata, dict) else {}


def _check_access_review(resource: Resource, review: dict[str, Any], spec: dict[str, Any],
                         namespace: str | None) -> None:
    causes = []
    attributes, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if attributes and non_resource:
        causes.append(("spec.nonResourceAttributes", "FieldValueInvalid",
                       'Invalid value: "non-null": cannot be specified in combination with '
                       "resourceAttributes"))
    elif not attributes and not non_resource:
        causes.append(("spec.resourceAttributes", "FieldValueInvalid",
                       f'Invalid value: "null": {_ONE_OF}'))
    if resource.plural == "localsubjectaccessreviews" and non_resource:
        causes.append(("spec.nonResourceAttributes", "FieldValueInvalid",
                       "Invalid value: \"non-null\": disallowed on this kind of request"))
    if resource.plural != "selfsubjectaccessreviews" and not spec.get("user") \
            and not spec.get("groups"):
        causes.append(("spec.user", "FieldValueInvalid",
                       'Invalid value: "": at least one of user or group must be specified'))
    if causes:
        raise errors.invalid(resource.kind, "", causes, resource.group)
    if resource.plural == "localsubjectaccessreviews":
        named = (attributes or {}).get("namespace", "")
        if named != namespace:
            raise errors.BadRequest(
                f"spec.resourceAttributes.namespace must match namespace: {namespace}")


async def _token_review(resource: Resource, spec: dict[str, Any],
                        token_reviewer: TokenReviewer,
                 access_reviewer: AccessReviewer = ALLOW_EVERYTHING) -> dict[str, Any]:
    token = spec.get("token")
    if not isinstance(token, str) or not token:
        raise errors.invalid(resource.kind, "", [("spec.token", "FieldValueRequired",
                                                  "Required value: token must be specified")],
                             resource.group)
    wanted = spec.get("audiences") or None
    user, audiences = await token_reviewer(token, wanted)
    if user is None:
        return {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
    return {"authenticated": True, "user": user.info(), "audiences": audiences}
