"""Query parameters, parsed as upstream converts `url.Values` into its option structs.

Every number is an int64 (`strconv.ParseInt`): anything else, or a value outside int64, is a
400 naming the parameter, never a value that overflows further down (SQLite takes at most an
int64) or a float such as `nan` that compares with nothing. Booleans take what Go's
`strconv.ParseBool` takes (`1`, `t`, `true`, `True`, `TRUE`, and the false forms; the Python
client sends `True`). An empty value is the same as an absent one.
"""

from __future__ import annotations

from collections.abc import Mapping

from k8py.api import errors

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
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
