"""Extra join tokens (`k8py token create | list | delete`), as k3s and kubeadm keep them:
bootstrap-token Secrets in kube-system.

A token is `K10<sha256 of the server's CA>::<id>.<secret>`: the id (6 characters) names the
Secret `bootstrap-token-<id>`, the secret (16 characters) is checked by the server's join
endpoint (`server.apiserver.join`) in constant time, and the CA hash lets the agent check
the server before it trusts it, as with the server's own token. A token expires after its
TTL (default 24 h; 0: never) and is refused from then on, or once deleted.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import secrets
import string
from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client

SECRETS = builtin("v1", "secrets")
NAMESPACE = "kube-system"
TYPE = "bootstrap.kubernetes.io/token"
ID_AND_SECRET = re.compile(r"([a-z0-9]{6})\.([a-z0-9]{16})")  # what a joining agent presents
_ALPHABET = string.ascii_lowercase + string.digits


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def secret_name(token_id: str) -> str:
    return f"bootstrap-token-{token_id}"


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's data, decoded (a value that is not base64 text: "")."""
    out = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            out[key] = ""
    return out


async def create(client: Client, ca_pem: bytes, ttl: datetime.timedelta | None,
                 description: str = "") -> str:
    """A new token, whole (`K10…::<id>.<secret>`)."""
    token_id, token_secret = _random(6), _random(16)
    data = {"token-id": token_id, "token-secret": token_secret,
            "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
            "auth-extra-groups": "system:bootstrappers:k8py:default-node-token"}
    if ttl:
        expires = datetime.datetime.now(datetime.timezone.utc) + ttl
        data["expiration"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    if description:
        data["description"] = description
    await client.create(SECRETS, {
        "metadata": {"name": secret_name(token_id), "namespace": NAMESPACE},
        "type": TYPE,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}},
        NAMESPACE)
    return f"K10{hashlib.sha256(ca_pem).hexdigest()}::{token_id}.{token_secret}"


async def listed(client: Client) -> list[dict[str, str]]:
    """Every bootstrap token: id, expiration ("" for never), description, usages."""
    items = (await client.list(SECRETS, NAMESPACE))["items"]
    tokens = []
    for item in items:
        if item.get("type") != TYPE:
            continue
        data = secret_data(item)
        tokens.append({"id": data.get("token-id", ""), "expires": data.get("expiration", ""),
                       "description": data.get("description", ""),
                       "usages": ",".join(k[len("usage-bootstrap-"):] for k, v in data.items()
                                          if k.startswith("usage-bootstrap-") and v == "true")})
    return sorted(tokens, key=lambda t: t["id"])


async def delete(client: Client, token_id: str) -> bool:
    """Delete token `token_id` (the id, or the whole token); whether it existed."""
    token_id = token_id.rsplit("::", 1)[-1].split(".", 1)[0]
    try:
        await client.delete(SECRETS, secret_name(token_id), NAMESPACE)
    except errors.NotFound:
        return False
    return True


def parse_ttl(value: str) -> datetime.timedelta | None:
    """`24h`, `30m`, `90s`, `2h30m`, `0` (never): Go's duration syntax for what tokens use."""
    if value.strip() in ("0", "0s", ""):
        return None
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for char in value.strip():
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total += float(number) * units[char]
            number = ""
        else:
            raise ValueError(f"{value!r} is not a duration (e.g. 24h, 30m, 0 for never)")
    if number:
        raise ValueError(f"{value!r} needs a unit (h, m or s)")
    return datetime.timedelta(seconds=total)
