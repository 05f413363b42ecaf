"""Impersonation: `Impersonate-User`, `-Group`, `-Uid` and `-Extra-<key>` headers (what
`kubectl --as`, `--as-group`, `--as-uid` send), each authorized for the real user first, as
upstream's WithImpersonation filter:

- a user name is checked as verb `impersonate` on `users` (group ""), or for
  `system:serviceaccount:<ns>:<name>` on `serviceaccounts` named <name> in <ns>;
- each group on `groups`; the uid on `uids` in `authentication.k8s.io`; each extra value on
  `userextras/<key>` in `authentication.k8s.io`, named by the value.
A refusal is the 403 of that check (`users "bob" is forbidden: User "alice" cannot
impersonate resource "users" in API group "" at the cluster scope`). Groups, uid or extras
without a user are a 400 (upstream answers 500 there; a client's mistake is not a server
error). The impersonated user gets `system:authenticated` unless it is
`system:anonymous` or a given group says authenticated or unauthenticated; a service account
without given groups gets `system:serviceaccounts` and `system:serviceaccounts:<ns>`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import unquote

from k8py.api import errors
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.authz import Attributes

USER_HEADER = "Impersonate-User"
GROUP_HEADER = "Impersonate-Group"
UID_HEADER = "Impersonate-Uid"
EXTRA_PREFIX = "impersonate-extra-"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
AUTHENTICATED, UNAUTHENTICATED = "system:authenticated", "system:unauthenticated"
ANONYMOUS = "system:anonymous"


def requested(headers: Mapping[str, str]) -> bool:
    return any(key.lower().startswith("impersonate-") for key in headers)


async def impersonate(actor: User, headers, check: Callable[[Attributes], Awaitable[None]]
                      ) -> User:
    """The user `actor` acts as, every part of it authorized by `check` (which raises)."""
    name = headers.get(USER_HEADER, "")
    groups = list(headers.getall(GROUP_HEADER, []))
    uid = headers.get(UID_HEADER, "")
    extra: dict[str, list[str]] = {}
    for key, value in headers.items():
        if key.lower().startswith(EXTRA_PREFIX):
            extra.setdefault(unquote(key[len(EXTRA_PREFIX):]).lower(), []).append(value)
    if not name:
        raise errors.BadRequest(f"requested impersonation of groups {groups}, uid or extras "
                                "without impersonating a user")
    account = _service_account(name)
    if account is not None:
        namespace, account_name = account
        await check(Attributes(actor, "impersonate", True, "", "", "serviceaccounts", "",
                               namespace, account_name))
        if not groups:
            groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    else:
        await check(Attributes(actor, "impersonate", True, "", "", "users", "", "", name))
    for group in headers.getall(GROUP_HEADER, []):
        await check(Attributes(actor, "impersonate", True, "", "", "groups", "", "", group))
    if uid:
        await check(Attributes(actor, "impersonate", True, "authentication.k8s.io", "",
                               "uids", "", "", uid))
    for key, values in extra.items():
        for value in values:
            await check(Attributes(actor, "impersonate", True, "authentication.k8s.io", "",
                                   "userextras", key, "", value))
    if name != ANONYMOUS and AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
        groups.append(AUTHENTICATED)
    return User(name, tuple(groups), uid, extra)


def _service_account(name: str) -> tuple[str, str] | None:
    if not name.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, sep, account = name[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
    if not sep or not namespace or not account or ":" in account:
        return None
    return namespace, account
