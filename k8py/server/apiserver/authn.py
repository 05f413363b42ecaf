"""Who is asking: client certificates signed by the cluster CA, or bearer tokens.

TLS asks every client for a certificate (optional) and verifies it against the cluster CA;
a verified certificate names the user (CN) and groups (O), as upstream's x509 authenticator.
Otherwise an `Authorization: Bearer` token is looked up in the server's token file
(`<data-dir>/server/cred/tokens`, upstream's static token file format
`token,user,uid,"group1,group2"`), and failing that checked as a service-account token
(`tokens.ServiceAccountTokens`: a JWT the server signed, whose account and bound pod still
exist). Anonymous requests reach only the health and version endpoints and the join
endpoints (`join`: /cacerts, and node-credentials, which checks the join token itself);
everything else is a 401. A joined node's kubelet client certificate (CN
`system:node:<name>`, O `system:nodes`) is a user like any other. Authorization (RBAC, a
node authorizer) comes later: today every authenticated user may do everything.
"""

from __future__ import annotations

import csv
import dataclasses
import hmac
import os
import secrets
from typing import Any, Protocol

from aiohttp import web

# /cacerts and /v1-k8py (joining agents, `join`): public, or checked by the handler itself
ANONYMOUS_PATHS = ("/healthz", "/livez", "/readyz", "/version", "/cacerts", "/v1-k8py")


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    #: upstream's user extras (a service account's pod name and uid, its token's id)
    extra: dict[str, list[str]] = dataclasses.field(default_factory=dict, compare=False,
                                                    hash=False)

    def info(self) -> dict[str, Any]:
        """The user as upstream's UserInfo: username, uid, groups (with
        `system:authenticated`, which upstream adds to every authenticated user), extra."""
        groups = list(self.groups)
        if "system:authenticated" not in groups:
            groups.append("system:authenticated")
        info: dict[str, Any] = {"username": self.name}
        if self.uid:
            info["uid"] = self.uid
        info["groups"] = groups
        if self.extra:
            info["extra"] = {k: list(v) for k, v in self.extra.items()}
        return info


class BearerAuthenticator(Protocol):
    """Bearer tokens checked beyond the token file (`tokens.ServiceAccountTokens`)."""

    async def authenticate(self, token: str) -> User | None: ...


USER_KEY = web.RequestKey("user", User)


class TokenFile:
    """Static bearer tokens, read once at start."""

    def __init__(self, path: str):
        self.path = path
        self._users: dict[str, User] = {}
        if os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as f:
                for row in csv.reader(f):
                    if len(row) >= 2 and row[0] and not row[0].startswith("#"):
                        groups = tuple(g for g in (row[3] if len(row) > 3 else "").split(",") if g)
                        self._users[row[0]] = User(row[1], groups)

    @classmethod
    def ensure(cls, path: str, user: str, groups: tuple[str, ...]) -> "TokenFile":
        """The token file, created with one token for user if it does not exist."""
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            token = secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(f'{token},{user},{user},"{",".join(groups)}"\n')
        return cls(path)

    def first_token(self) -> str:
        return next(iter(self._users))

    def lookup(self, token: str) -> User | None:
        for known, user in self._users.items():
            if hmac.compare_digest(known, token):
                return user
        return None


def _peer_user(request: web.Request) -> User | None:
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    name, groups = "", []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    return User(name, tuple(groups)) if name else None


async def authenticate(request: web.Request, tokens: TokenFile,
                       bearer: BearerAuthenticator | None = None) -> User | None:
    user = _peer_user(request)
    if user is not None:
        return user
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer ":
        return None
    token = header[7:].strip()
    user = tokens.lookup(token)
    if user is None and bearer is not None and token:
        user = await bearer.authenticate(token)
    return user


def is_anonymous_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in ANONYMOUS_PATHS)
