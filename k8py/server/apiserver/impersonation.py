"""Impersonation: `Impersonate-User`, `-Group`, `-Uid` and `-Extra-<key>` headers (what
`kubectl --as`, `--as-group`, `--as-uid` send), each authorized for the real user first, as
upstream's WithImpersonation filter:

- a user name is checked as verb `impersonate` on `users` (group ""), or for
  `system:serviceaccount:<ns>:<name>` on `serviceaccounts` named <name> in <ns>;
- each group on `groups`; each extra value on `userextras/<key>` in `authentication.k8s.io`,
  named by the value; the uid last, on `uids` in `authentication.k8s.io` (upstream's order).
A refusal is the 403 of that check (`users "bob" is forbidden: User "alice" cannot
impersonate resource "users" in API group "" at the cluster scope`). Groups, uid or extras
without a user are upstream's 400 (`requested [{Group  g    }] without impersonating a
user`, Go's rendering of the ObjectReferences asked for). A user name is a service account
only when its namespace is a DNS label and its name a DNS subdomain (upstream's
SplitUsername); otherwise it is a plain user. Extra keys are lower-cased, then
percent-decoded (kept as sent when that fails). The impersonated user gets
`system:authenticated` unless a given group says authenticated or unauthenticated;
`system:anonymous` gets `system:unauthenticated` instead; a service account without given
groups gets `system:serviceaccounts` and `system:serviceaccounts:<ns>`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import unquote_to_bytes

from k8py.api import errors
from k8py.api.meta import DNS1123_LABEL, DNS1123_SUBDOMAIN
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.authz import ANONYMOUS, AUTHENTICATED, UNAUTHENTICATED, Attributes

USER_HEADER = "Impersonate-User"
GROUP_HEADER = "Impersonate-Group"
UID_HEADER = "Impersonate-Uid"
EXTRA_PREFIX = "impersonate-extra-"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
AUTHENTICATION = "authentication.k8s.io"


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
            extra.setdefault(_extra_key(key[len(EXTRA_PREFIX):]), []).append(value)
    if not name:
        asked = [f"{{Group  {g}    }}" for g in groups]
        asked += [f"{{UserExtra  {v}  {AUTHENTICATION}/v1  {k}}}"
                  for k, values in extra.items() for v in values]
        if uid:
            asked.append(f"{{UID  {uid}  {AUTHENTICATION}/v1  }}")
        raise errors.BadRequest(f"requested [{' '.join(asked)}] without impersonating a user")
    account = _service_account(name)
    if account is not None:
        namespace, account_name = account
        await check(Attributes(actor, "impersonate", True, "", "v1", "serviceaccounts", "",
                               namespace, account_name))
        if not groups:
            groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    else:
        await check(Attributes(actor, "impersonate", True, "", "v1", "users", "", "", name))
    for group in headers.getall(GROUP_HEADER, []):
        await check(Attributes(actor, "impersonate", True, "", "v1", "groups", "", "", group))
    for key, values in extra.items():
        for value in values:
            await check(Attributes(actor, "impersonate", True, AUTHENTICATION, "v1",
                                   "userextras", key, "", value))
    if uid:
        await check(Attributes(actor, "impersonate", True, AUTHENTICATION, "v1", "uids", "",
                               "", uid))
    if name == ANONYMOUS:
        if UNAUTHENTICATED not in groups:
            groups.append(UNAUTHENTICATED)
    elif AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
        groups.append(AUTHENTICATED)
    return User(name, tuple(groups), uid, extra)


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _extra_key(encoded: str) -> str:
    """Upstream's unescapeExtraKey of the lower-cased key: url.PathUnescape, or the key as
    sent when an escape is malformed."""
    key = encoded.lower()
    if _BAD_ESCAPE.search(key):
        return key
    return unquote_to_bytes(key).decode("utf-8", "replace")


def _service_account(name: str) -> tuple[str, str] | None:
    """upstream's serviceaccount.SplitUsername."""
    if not name.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    parts = name[len(SERVICE_ACCOUNT_PREFIX):].split(":")
    if len(parts) != 2:
        return None
    namespace, account = parts
    if len(namespace) > 63 or not DNS1123_LABEL.fullmatch(namespace) or \
            len(account) > 253 or not DNS1123_SUBDOMAIN.fullmatch(account):
        return None
    return namespace, account
