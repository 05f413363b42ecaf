"""Joining agents, as k3s does: the CA for anyone, node credentials for holders of the token.

The join token is `K10<sha256 of the CA PEM>::server:<secret>` (`pki.ensure_pki`). An agent

1. fetches `GET /cacerts` without verifying TLS (it cannot yet: it has no CA) and checks the
   body's sha256 against the token's hash, so a server in the middle is caught;
2. with TLS verified against that CA, asks `POST /v1-k8py/node-credentials` with
   `Authorization: Bearer <secret>` and `{"nodeName", "addresses", "hostnames"}`, and gets
   PEMs: a kubelet client certificate (`system:node:<name>`, group `system:nodes`, which
   `authn` maps like any client certificate), a kubelet serving certificate for the node's
   names and addresses, their keys, and the CA.

Both paths bypass the authn middleware (`authn.ANONYMOUS_PATHS`): /cacerts is public, as in
k3s; node-credentials checks the secret itself, in constant time, and nothing else — a
client certificate, even the admin's, does not stand in for the token. Anything wrong with
the body is a 400 Status. There is no node authorizer yet: a node identity may write any
object, like every authenticated user until RBAC comes.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json

from aiohttp import web

from k8py.api import errors, meta
from k8py.server import pki
from k8py.server.apiserver import responses

PKI_KEY = web.AppKey("join_pki", pki.PKI)
CACERTS_PATH = "/cacerts"
NODE_CREDENTIALS_PATH = "/v1-k8py/node-credentials"
_MAX_NAMES = 64  # addresses or hostnames in one request


def add_routes(app: web.Application, certs: pki.PKI) -> None:
    app[PKI_KEY] = certs
    app.router.add_get(CACERTS_PATH, cacerts)
    app.router.add_post(NODE_CREDENTIALS_PATH, node_credentials)


async def cacerts(request: web.Request) -> web.Response:
    return web.Response(body=pki.ca_pem(request.app[PKI_KEY]), content_type="text/plain")


def _authorized(request: web.Request, secret: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer ":
        return False
    return hmac.compare_digest(header[7:].strip().encode(), secret.encode())


def _strings(body: dict, key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.BadRequest(f"{key} must be a list of strings")
    if len(value) > _MAX_NAMES:
        raise errors.BadRequest(f"{key}: at most {_MAX_NAMES} entries")
    return value


def parse_request(raw: bytes) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(node name, addresses, hostnames) from the request body, or a BadRequest."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise errors.BadRequest("the body must be JSON") from None
    if not isinstance(body, dict):
        raise errors.BadRequest("the body must be a JSON object")
    name = body.get("nodeName")
    if not isinstance(name, str) or not name:
        raise errors.BadRequest("nodeName is required")
    problem = (("must be no more than 253 characters" if len(name) > 253 else None)
               or (None if meta.DNS1123_SUBDOMAIN.match(name) else
                   "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                   "characters, '-' or '.', and must start and end with an alphanumeric "
                   "character"))
    if problem:
        raise errors.BadRequest(f"nodeName {name!r}: {problem}")
    addresses = []
    for address in _strings(body, "addresses"):
        try:
            addresses.append(str(ipaddress.ip_address(address)))
        except ValueError:
            raise errors.BadRequest(f"addresses: {address!r} is not an IP address") from None
    hostnames = _strings(body, "hostnames")
    for hostname in hostnames:
        if len(hostname) > 253 or not meta.DNS1123_SUBDOMAIN.match(hostname):
            raise errors.BadRequest(f"hostnames: {hostname!r} is not a DNS name")
    return name, tuple(addresses), tuple(hostnames)


async def node_credentials(request: web.Request) -> web.Response:
    certs = request.app[PKI_KEY]
    if not _authorized(request, pki.join_secret(certs)):
        raise errors.Unauthorized("Unauthorized")
    name, addresses, hostnames = parse_request(await request.read())
    # key generation and signing: a few milliseconds, off the event loop all the same
    issued = await asyncio.to_thread(pki.issue_node_credentials, certs, name, addresses,
                                     hostnames)
    return responses.json_response({
        "clientCert": issued.client_cert.decode(), "clientKey": issued.client_key.decode(),
        "servingCert": issued.serving_cert.decode(), "servingKey": issued.serving_key.decode(),
        "ca": issued.ca_cert.decode()})
