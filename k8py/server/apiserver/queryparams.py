"""Query parameters, parsed as upstream converts `url.Values` into its option structs.

Every number is an int64 (`strconv.ParseInt`): anything else, or a value outside int64, is a
400 naming the parameter, never a value that overflows further down (SQLite takes at most an
int64) or a float such as `nan` that compares with nothing. Booleans take what Go's
`strconv.ParseBool` takes (`1`, `t`, `true`, `True`, `TRUE`, and the false forms; the Python
client sends `True`). An empty value is the same as an absent one.

Also the option sets built from several parameters: `dryRun`, the selectors (`matcher`) and
DeleteOptions (`delete_options`, body and query together).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from k8py.api import errors, pruning, schemas, selectors
from k8py.api.pruning import INT64_MAX, INT64_MIN

_TRUE = {"1", "t", "T", "true", "True", "TRUE"}
_FALSE = {"0", "f", "F", "false", "False", "FALSE"}


def parse_int64(value: object, name: str) -> int:
    """value (a query string, or a JSON number from a body) as an int64, or a 400."""
    if isinstance(value, bool):
        raise errors.BadRequest(f"invalid {name}: {value!r} is not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and 0 < len(value) <= 20 and value.lstrip("+-").isdigit() \
            and value.isascii():
        number = int(value)
    else:
        raise errors.BadRequest(f"invalid {name}: {str(value)[:40]!r} is not an integer")
    if not INT64_MIN <= number <= INT64_MAX:
        raise errors.BadRequest(f"invalid {name}: {value} is out of range")
    return number


def int64(query: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = query.get(name, "")
    return default if value == "" else parse_int64(value, name)


def boolean(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "")
    if value == "" or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise errors.BadRequest(f"invalid {name}: {value[:40]!r} is not a boolean")


def dry_run(query) -> bool:
    """`dryRun=All` (repeated or not); any other value is a 400."""
    values = query.getall("dryRun", [])
    for value in values:
        if value != "All":
            raise errors.BadRequest(f'unsupported dryRun value "{value}": only "All" is allowed')
    return bool(values)


def matcher(query: Mapping[str, str]) -> Callable[[dict[str, Any]], bool] | None:
    """The label and field selectors' test for objects, or None when there is none."""
    if not query.get("labelSelector") and not query.get("fieldSelector"):
        return None
    try:
        label = selectors.label_matcher(query.get("labelSelector", ""))
        field = selectors.field_matcher(query.get("fieldSelector", ""))
    except ValueError as exc:
        raise errors.BadRequest(str(exc)) from None
    return lambda obj: label(obj) and field(obj)


PROPAGATION_POLICIES = (None, "Background", "Foreground", "Orphan")


def delete_options(query: Mapping[str, str], body: Any) -> dict[str, Any]:
    """A delete's DeleteOptions as upstream reads them: the body's (typed against the
    schema, so `gracePeriodSeconds: "x"` is a 400), then the query's for what the body left
    out (the Python client sends `gracePeriodSeconds` and `propagationPolicy` there)."""
    if body is not None and not isinstance(body, dict):
        raise errors.BadRequest("DeleteOptions must be an object")
    options = dict(body or {})
    try:
        pruning.prune(options, schemas.for_kind("", "v1", "DeleteOptions"))
    except pruning.TypeMismatch as exc:
        raise errors.BadRequest(f"DeleteOptions cannot be decoded: {exc}") from None
    if options.get("gracePeriodSeconds") is None:
        options["gracePeriodSeconds"] = int64(query, "gracePeriodSeconds")
    if not options.get("propagationPolicy"):
        options["propagationPolicy"] = query.get("propagationPolicy") or None
    if options.get("orphanDependents") is None and query.get("orphanDependents"):
        options["orphanDependents"] = boolean(query, "orphanDependents")
    if options["propagationPolicy"] not in PROPAGATION_POLICIES:
        raise errors.BadRequest(
            f"propagationPolicy {options['propagationPolicy']!r} is not supported")
    return options
