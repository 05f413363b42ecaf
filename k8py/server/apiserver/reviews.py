"""Reviews: requests that are answered, never stored.

Authorization (authorization.k8s.io/v1). k8py does not enforce RBAC yet: every authenticated
user may do everything, so the truthful answers are:
- SelfSubjectAccessReview (`kubectl auth can-i`): allowed, with a reason that says why;
- SubjectAccessReview (a webhook or a controller asking about someone else; a user or a group
  is required) and LocalSubjectAccessReview (the same, within the URL's namespace, which the
  resource attributes must name): allowed;
- SelfSubjectRulesReview (`kubectl auth can-i --list`): every verb on every resource and
  non-resource URL, `incomplete: false`.
When RBAC lands, the answers come from its authorizer instead. Validation and messages are
upstream's (pkg/apis/authorization/validation, the reviews' REST storage).

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
from typing import Any

from k8py.api import errors, meta
from k8py.api.resources import Resource
from k8py.server.apiserver.authn import User

# (token, audiences wanted or None) -> (user or None, audiences the token is good for)
TokenReviewer = Callable[[str, list[str] | None], Awaitable[tuple[User | None, list[str]]]]

REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
           ("authorization.k8s.io", "selfsubjectrulesreviews"),
           ("authorization.k8s.io", "subjectaccessreviews"),
           ("authorization.k8s.io", "localsubjectaccessreviews"),
           ("authentication.k8s.io", "selfsubjectreviews"),
           ("authentication.k8s.io", "tokenreviews")}

ALLOWED_REASON = "k8py allows every authenticated user everything until RBAC is enforced"
_ONE_OF = "exactly one of nonResourceAttributes or resourceAttributes must be specified"


async def answer(resource: Resource, body: Any, user: User | None, namespace: str | None,
                 token_reviewer: TokenReviewer) -> dict[str, Any]:
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
        review["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False}
    else:
        _check_access_review(resource, review, spec, namespace)
        review["status"] = {"allowed": True, "reason": ALLOWED_REASON}
    review["metadata"] = {**_metadata(review), "creationTimestamp": None}
    return review


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
                        token_reviewer: TokenReviewer) -> dict[str, Any]:
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
