"""Reviews: requests that are answered, never stored (`kubectl auth can-i`).

A SelfSubjectAccessReview asks whether the requesting user may do something. k8py does not
enforce RBAC yet: every authenticated user may do everything, so the truthful answer is
"allowed", with a reason that says why. When RBAC lands, the answer comes from its
authorizer instead.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors, meta
from k8py.api.resources import Resource
from k8py.server.apiserver.authn import User

REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews")}

ALLOWED_REASON = "k8py allows every authenticated user everything until RBAC is enforced"


def answer(resource: Resource, body: Any, user: User | None) -> dict[str, Any]:
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
