"""Field validation: fields a kind's schema does not know, as upstream's typed decoding and
`fieldValidation` treat them.

Built-in kinds are pruned against their upstream schema (`k8py.api.pruning`, which also
checks every value's type, as Go's decoder does); custom resources against their CRD's
openAPIV3Schema (`k8py.api.structural`); any kind's metadata against ObjectMeta.
`fieldValidation=Strict` refuses unknown fields, `Warn` (the default) drops them and answers
with one `Warning: 299 - "unknown field \"spec.foo\""` header each, `Ignore` drops them
silently. A body that does not decode is a 400 as sent, a 422 on the field `patch` when it
is the result of a patch.
"""

from __future__ import annotations

import json

from aiohttp import web

from k8py.api import errors, pruning, schemas, structural
from k8py.api.resources import Resource

WARNINGS_KEY = web.RequestKey("warnings", list)
MODES = ("Ignore", "Warn", "Strict")


def mode(request: web.Request) -> str:
    value = request.query.get("fieldValidation", "") or "Warn"
    if value not in MODES:
        raise errors.BadRequest(
            f'fieldValidation must be one of "Ignore", "Warn" or "Strict", not "{value}"')
    return value


def drop_unknown_fields(request: web.Request, resource: Resource, obj: dict,
                        patched: bool = False) -> dict:
    """obj without the fields its kind's schema does not know; Strict refuses them, Warn
    warns."""
    wanted = mode(request)
    schema = schemas.for_resource(resource)
    try:
        if schema is None:  # whatever the kind, its metadata is an ObjectMeta
            pruning.prune({"metadata": obj.get("metadata")}, schemas.object_metadata())
        else:
            pruned, unknown = pruning.prune(obj, schema)
    except pruning.TypeMismatch as exc:
        raise undecodable(resource, obj, str(exc), patched) from None
    if schema is None:
        if not resource.custom or not resource.schema:
            return obj
        pruned, unknown = structural.prune(obj, resource.schema)
    if not unknown:  # a built-in kind's pruned copy also holds what Go's decoding makes
        return pruned if schema is not None else obj  # of nulls (in a ResourceList: "0")
    listed = ", ".join(f'unknown field "{path}"' for path in unknown)
    if wanted == "Strict":
        raise undecodable(resource, obj, f"strict decoding error: {listed}", patched)
    if wanted == "Warn":
        request.setdefault(WARNINGS_KEY, []).extend(f'unknown field "{p}"' for p in unknown)
    return pruned


def undecodable(resource: Resource, obj: dict, message: str,
                patched: bool) -> errors.StatusError:
    """Upstream's error for a body its typed decoding refuses: a 400 for a body as sent, a
    422 on the field `patch` for the result of a patch."""
    if patched:
        value = json.dumps(obj, separators=(",", ":"))
        return errors.Invalid(f' "" is invalid: patch: Invalid value: "{value}": {message}',
                              causes=[{"reason": "FieldValueInvalid", "message":
                                       f'Invalid value: "{value}": {message}',
                                       "field": "patch"}])
    return errors.BadRequest(f'{resource.kind} in version "{resource.version}" cannot be '
                             f"handled as a {resource.kind}: {message}")


def with_warnings(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """The response with the request's warnings as `Warning` headers."""
    for warning in request.get(WARNINGS_KEY, ()):
        response.headers.add("Warning", f"299 - {json.dumps(warning)}")
    return response
