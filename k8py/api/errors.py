"""Kubernetes API errors: one exception per `metav1.StatusReason`, rendered as a `Status` body.

Every failure the API server reports is a `StatusError` raised somewhere below the HTTP
handler and turned into JSON in one place (`StatusError.status()`), with upstream's reason,
code and message wording (`pods "x" not found`), so kubectl prints
`Error from server (NotFound): pods "x" not found` exactly as it would against upstream.
"""

from __future__ import annotations

from typing import Any


class StatusError(Exception):
    code = 500
    reason = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        name: str = "",
        group: str = "",
        kind: str = "",
        causes: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = {}
        if name:
            self.details["name"] = name
        if group:
            self.details["group"] = group
        if kind:
            self.details["kind"] = kind
        if causes:
            self.details["causes"] = causes
        if retry_after is not None:
            self.details["retryAfterSeconds"] = retry_after

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details:
            body["details"] = self.details
        body["code"] = self.code  # after details: Go's field order (clients compare bodies)
        return body


class BadRequest(StatusError):
    code, reason = 400, "BadRequest"


class Unauthorized(StatusError):
    code, reason = 401, "Unauthorized"


class Forbidden(StatusError):
    code, reason = 403, "Forbidden"


class NotFound(StatusError):
    code, reason = 404, "NotFound"


class MethodNotAllowed(StatusError):
    code, reason = 405, "MethodNotAllowed"


class NotAcceptable(StatusError):
    code, reason = 406, "NotAcceptable"


class AlreadyExists(StatusError):
    code, reason = 409, "AlreadyExists"


class Conflict(StatusError):
    code, reason = 409, "Conflict"


class Expired(StatusError):
    code, reason = 410, "Expired"


class RequestEntityTooLarge(StatusError):
    code, reason = 413, "RequestEntityTooLarge"


class UnsupportedMediaType(StatusError):
    code, reason = 415, "UnsupportedMediaType"


class Invalid(StatusError):
    code, reason = 422, "Invalid"


class TooManyRequests(StatusError):
    code, reason = 429, "TooManyRequests"


class InternalError(StatusError):
    code, reason = 500, "InternalError"


class ServiceUnavailable(StatusError):
    code, reason = 503, "ServiceUnavailable"


class Timeout(StatusError):
    code, reason = 504, "Timeout"


def too_large_resource_version(requested: int, current: int, retry_after: int = 1) -> Timeout:
    """upstream's storage.NewTooLargeResourceVersionError: a read or watch asked for a
    resourceVersion the store has not reached (within the wait allowed for it)."""
    return Timeout(f"Timeout: Too large resource version: {requested}, current: {current}",
                   causes=[{"reason": "ResourceVersionTooLarge",
                            "message": "Too large resource version"}],
                   retry_after=retry_after)


def not_found(resource: str, name: str, group: str = "") -> NotFound:
    qualified = f"{resource}.{group}" if group else resource
    return NotFound(f'{qualified} "{name}" not found', name=name, group=group, kind=resource)


def already_exists(resource: str, name: str, group: str = "") -> AlreadyExists:
    qualified = f"{resource}.{group}" if group else resource
    return AlreadyExists(
        f'{qualified} "{name}" already exists', name=name, group=group, kind=resource
    )


def forbidden(resource: str, name: str, message: str, group: str = "") -> Forbidden:
    """Upstream's NewForbidden: `<resource>[.<group>] "<name>" is forbidden: <message>`
    (`<resource> is forbidden` without a name, `forbidden: <message>` without a
    resource)."""
    qualified = f"{resource}.{group}" if group else resource
    if not qualified:
        text = f"forbidden: {message}"
    elif not name:
        text = f"{qualified} is forbidden: {message}"
    else:
        text = f'{qualified} "{name}" is forbidden: {message}'
    return Forbidden(text, name=name, group=group, kind=resource)


class LostRace(Conflict):
    """A Conflict from the store's compare-and-swap: another writer got in between this
    request's read and its write. Clients see the plain 409; a server-side read-modify-write
    that the client did not pin to a resourceVersion reads again and redoes its change
    instead (upstream's GuaranteedUpdate). Every other Conflict (a stale resourceVersion the
    client sent, a failed precondition) is the client's to see."""


def conflict(resource: str, name: str, group: str = "", *,
             lost_race: bool = False) -> Conflict:
    qualified = f"{resource}.{group}" if group else resource
    return (LostRace if lost_race else Conflict)(
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        name=name,
        group=group,
        kind=resource,
    )


def invalid(kind: str, name: str, causes: list[tuple[str, str, str]], group: str = "") -> Invalid:
    """causes: (field, reason such as FieldValueRequired, message)."""
    qualified = f"{kind}.{group}" if group else kind
    summary = ", ".join(f"{field}: {message}" for field, _, message in causes)
    return Invalid(
        f'{qualified} "{name}" is invalid: {summary}',
        name=name,
        group=group,
        kind=kind,
        causes=[{"reason": r, "message": m, "field": f} for f, r, m in causes],
    )


_BY_REASON = {cls.reason: cls for cls in (
    BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, NotAcceptable,
    AlreadyExists, Conflict, Expired, RequestEntityTooLarge, UnsupportedMediaType, Invalid,
    TooManyRequests, InternalError, ServiceUnavailable, Timeout)}
_BY_CODE = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
            405: MethodNotAllowed, 406: NotAcceptable, 409: Conflict, 410: Expired,
            413: RequestEntityTooLarge, 415: UnsupportedMediaType, 422: Invalid,
            429: TooManyRequests, 503: ServiceUnavailable, 504: Timeout}


def from_status(body: Any, code: int) -> StatusError:
    """The error a `Status` body (or, failing that, an HTTP code) stands for: a client sees
    the same exception whether it reached the API server in process or over HTTP."""
    if not isinstance(body, dict):
        body = {}
    cls = _BY_REASON.get(body.get("reason", "")) or _BY_CODE.get(code, StatusError)
    details = body.get("details") or {}
    error = cls(body.get("message") or f"the server answered {code}",
                name=details.get("name", ""), group=details.get("group", ""),
                kind=details.get("kind", ""), causes=details.get("causes"),
                retry_after=details.get("retryAfterSeconds"))
    if cls is StatusError:
        error.code = code
    return error
