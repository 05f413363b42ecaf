"""Reviews: requests that are answered, never stored (`kubectl auth can-i`, `auth whoami`).

A SelfSubjectAccessReview asks whether the requesting user may do something. k8py does not
enforce RBAC yet: every authenticated user may do everything, so the truthful answer is
"allowed", with a reason that says why. When RBAC lands, the answer comes from its
authorizer instead.

A SelfSubjectReview asks who the requester is: the answer is the authenticated user's name,
uid, groups (with `system:authenticated`, as upstream adds it) and extras.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors, meta
from k8py.api.resources import Resource
from k8py.server.apiserver.authn import User

REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
           ("authentication.k8s.io", "selfsubjectreviews")}

ALLOWED_REASON = "k8py allows every authenticated user everything until RBAC is enforced"


def answer(resource: Resource, body: Any, user: User | None) -> dict[str, Any]:
    if resource.plural == "selfsubjectreviews":
        return _who_am_i(resource, body, user)
    review = meta.check_type(resource, body)
    spec = review.get("spec")
    if not isinstance(spec, dict) or not (spec.get("resourceAttributes") or
                                          spec.get("nonResourceAttributes")):
        raise errors.invalid(resource.kind, "", [(
            "spec.resourceAttributes", "FieldValueRequired",
            "Required value: exactly one of nonResourceAttributes or resourceAttributes must "
            "be specified")], resource.group)
    review["metadata"] = {"creationTimestamp": None}
    review["status"] = {"allowed": user is not None, "reason": ALLOWED_REASON}
    return review


def _who_am_i(resource: Resource, body: Any, user: User | None) -> dict[str, Any]:
    review = meta.check_type(resource, body if body is not None else {})
    if user is None:
        raise errors.Unauthorized("Unauthorized")
    groups = list(user.groups)
    if "system:authenticated" not in groups:
        groups.append("system:authenticated")
    info: dict[str, Any] = {"username": user.name, "groups": groups}
    if user.uid:
        info["uid"] = user.uid
    if user.extra:
        info["extra"] = {k: list(v) for k, v in user.extra.items()}
    review["metadata"] = {"creationTimestamp": None}
    review["status"] = {"userInfo": info}
    return review
