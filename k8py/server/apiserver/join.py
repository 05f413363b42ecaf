"""Joining agents, as k3s does: the CA for anyone, node credentials for holders of the token.

The join token is `K10<sha256 of the CA PEM>::server:<secret>` (`pki.ensure_pki`). An agent

1. fetches `GET /cacerts` without verifying TLS (it cannot yet: it has no CA) and checks the
   body's sha256 against the token's hash, so a server in the middle is caught;
2. with TLS verified against that CA, asks `POST /v1-k8py/node-credentials` with
   `Authorization: Bearer <secret>` and `{"nodeName", "addresses", "hostnames"}`, and gets
   PEMs: a kubelet client certificate (`system:node:<name>`, group `system:nodes`, which
   `authn` maps like any client certificate), a kubelet serving certificate for the node's
   names and addresses, their keys, and the CA.

A joined agent renews its kubelet serving certificate with `POST
/v1-k8py/serving-kubelet` (k3s's way: the server signs kubelet serving certificates itself;
upstream's `kubernetes.io/kubelet-serving` requests wait for a human to approve them). The
caller is the node its verified client certificate names (`system:node:<name>` in
`system:nodes`, so it works after the join token is gone), and it proves the node password
too; the body is `{"request": <PEM CSR>, "addresses", "hostnames", "nodePassword"}`; the
answer `{"servingCert": <PEM chain>, "ca": <trust bundle>}` is a certificate for the CSR's
key, with the node's name and the names given, as `node-credentials` issues.

A joining server (`k8py server --server URL --token TOKEN`, `k8py.server.serverjoin`) asks
`GET /v1-k8py/server-bootstrap` with the server's own secret (never a bootstrap token: this
hands out the CA keys) and gets k3s's bootstrap data: `{"files": {<path under
<data-dir>/server/>: <content>}, "etcdMembers": [{"name", "clientURLs", "peerURLs",
"isLearner"}]}`: the cluster CA (its key and cross-signed link), the service-account key, the
embedded etcd's CAs, the generated encryption config, and the etcd members to join through.
A server without an embedded etcd answers 400.

All four paths bypass the authn middleware (`authn.ANONYMOUS_PATHS`): /cacerts is public, as in
k3s; node-credentials checks the secret itself, in constant time, and nothing else — a
client certificate, even the admin's, does not stand in for the token. Besides the server's
own secret, a bootstrap token (`k8py token create`: a `bootstrap-token-<id>` Secret in
kube-system, `<id>.<secret>` in the join token) is accepted until it expires or is deleted.

Node passwords, as k3s keeps them: an agent sends the password it generated once
(`<data-dir>/agent/node-password`); the first join of a node name stores a salted hash of it
in the Secret `<node>.node-password.k8py` (kube-system), and a later join of that name with
another password is refused (403) with one line saying why — a second host claiming an
existing node's name. The Secret goes when the Node is deleted
(`controllers.nodepasswords`). Anything wrong with the body is a 400 Status. There is no
node authorizer yet: a node identity may write any object, like every authenticated user
until RBAC comes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import os

from aiohttp import web
from cryptography import x509

from k8py import jointokens
from k8py.api import errors, meta, timestamps
from k8py.api.resources import Registry
from k8py.server import pki
from k8py.server.apiserver import responses
from k8py.server.apiserver.storage import ObjectStore

PKI_KEY = web.AppKey("join_pki", pki.PKI)
STORE_KEY = web.AppKey("join_store", tuple)
PASSWORD_SUFFIX = ".node-password.k8py"
PBKDF2_ROUNDS = 100_000
CACERTS_PATH = "/cacerts"
NODE_CREDENTIALS_PATH = "/v1-k8py/node-credentials"
SERVING_KUBELET_PATH = "/v1-k8py/serving-kubelet"
SERVER_BOOTSTRAP_PATH = "/v1-k8py/server-bootstrap"
# what a joining server copies, relative to <data-dir>/server/ (present ones only)
BOOTSTRAP_FILES = ("tls/server-ca.crt", "tls/server-ca.key", "tls/server-ca-cross.crt",
                   "tls/service.key", "tls/etcd/server-ca.crt", "tls/etcd/server-ca.key",
                   "tls/etcd/peer-ca.crt", "tls/etcd/peer-ca.key",
                   "cred/encryption-config.json")
_MAX_NAMES = 64  # addresses or hostnames in one request


def add_routes(app: web.Application, certs: pki.PKI, objects: ObjectStore,
               registry: Registry) -> None:
    app[PKI_KEY] = certs
    app[STORE_KEY] = (objects, registry)
    app.router.add_get(CACERTS_PATH, cacerts)
    app.router.add_post(NODE_CREDENTIALS_PATH, node_credentials)
    app.router.add_post(SERVING_KUBELET_PATH, serving_kubelet)
    app.router.add_get(SERVER_BOOTSTRAP_PATH, server_bootstrap)


async def cacerts(request: web.Request) -> web.Response:
    return web.Response(body=pki.ca_pem(request.app[PKI_KEY]), content_type="text/plain")


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


async def _authorized(request: web.Request, secret: str) -> bool:
    """The server's secret, or an unexpired bootstrap token's `<id>.<secret>`."""
    given = _bearer(request)
    if not given:
        return False
    if hmac.compare_digest(given.encode(), secret.encode()):
        return True
    match = jointokens.ID_AND_SECRET.fullmatch(given)
    if match is None:
        return False
    objects, registry = request.app[STORE_KEY]
    try:
        token = await objects.get(registry.get("", "v1", "secrets"), jointokens.NAMESPACE,
                                  jointokens.secret_name(match.group(1)))
    except errors.NotFound:
        return False
    data = jointokens.secret_data(token)
    expiration = data.get("expiration")
    return (token.get("type") == jointokens.TYPE
            and data.get("usage-bootstrap-authentication") == "true"
            and hmac.compare_digest(data.get("token-secret", "").encode(),
                                    match.group(2).encode())
            and not (expiration and expiration <= timestamps.now()))


def _hash(password: str, salt: bytes) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS)
    return f"pbkdf2-sha256${PBKDF2_ROUNDS}${salt.hex()}${digest.hex()}"


def _matches(password: str, stored: str) -> bool:
    try:
        _, rounds, salt, digest = stored.split("$")
        computed = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt),
                                       int(rounds))
    except ValueError:
        return False
    return hmac.compare_digest(computed.hex(), digest)


async def check_node_password(objects: ObjectStore, registry: Registry, name: str,
                              password: str) -> None:
    """Remember the first password a node name joins with; refuse another one."""
    secrets = registry.get("", "v1", "secrets")
    secret_name = name + PASSWORD_SUFFIX
    try:
        existing = await objects.get(secrets, "kube-system", secret_name)
    except errors.NotFound:
        existing = None
    if existing is not None:
        stored = jointokens.secret_data(existing).get("hash", "")
        if not await asyncio.to_thread(_matches, password, stored):
            raise errors.Forbidden(
                f"node password rejected: a node named {name!r} joined before with another "
                "password (a second host with the same name, or its "
                "<data-dir>/agent/node-password changed); delete the Node to free the name")
        return
    stored = await asyncio.to_thread(_hash, password, os.urandom(16))
    secret = meta.prepare_create(secrets, {
        "metadata": {"name": secret_name, "namespace": "kube-system",
                     "labels": {"k8py.io/node-password": "true"}},
        "type": "k8py.io/node-password",
        "data": {"hash": base64.b64encode(stored.encode()).decode()}}, "kube-system")
    try:
        await objects.create(secrets, secret)
    except errors.AlreadyExists:  # the same node joining twice at once: check again
        await check_node_password(objects, registry, name, password)


def _strings(body: dict, key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.BadRequest(f"{key} must be a list of strings")
    if len(value) > _MAX_NAMES:
        raise errors.BadRequest(f"{key}: at most {_MAX_NAMES} entries")
    return value


def _object(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except ValueError:
        raise errors.BadRequest("the body must be JSON") from None
    if not isinstance(body, dict):
        raise errors.BadRequest("the body must be a JSON object")
    return body


def parse_request(raw: bytes) -> tuple[str, tuple[str, ...], tuple[str, ...], str]:
    """(node name, addresses, hostnames, node password) from the request body, or a
    BadRequest."""
    body = _object(raw)
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
    return (name, *_names(body))


def _names(body: dict) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(addresses, hostnames, node password) of a join or renewal body."""
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
    password = body.get("nodePassword")
    if not isinstance(password, str) or not 16 <= len(password) <= 256:
        raise errors.BadRequest("nodePassword is required (16 to 256 characters): the "
                                "agent's <data-dir>/agent/node-password")
    return tuple(addresses), tuple(hostnames), password


async def node_credentials(request: web.Request) -> web.Response:
    certs = request.app[PKI_KEY]
    if not await _authorized(request, pki.join_secret(certs)):
        raise errors.Unauthorized("Unauthorized")
    name, addresses, hostnames, password = parse_request(await request.read())
    objects, registry = request.app[STORE_KEY]
    await check_node_password(objects, registry, name, password)
    # key generation and signing: a few milliseconds, off the event loop all the same
    issued = await asyncio.to_thread(pki.issue_node_credentials, certs, name, addresses,
                                     hostnames)
    return responses.json_response({
        "clientCert": issued.client_cert.decode(), "clientKey": issued.client_key.decode(),
        "servingCert": issued.serving_cert.decode(), "servingKey": issued.serving_key.decode(),
        "ca": issued.ca_cert.decode()})


def _calling_node(request: web.Request) -> str | None:
    """The node a verified client certificate names (CN `system:node:<name>`, O
    `system:nodes`), or None."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    attributes = [(k, v) for rdn in (cert or {}).get("subject", ()) for k, v in rdn]
    names = [v for k, v in attributes if k == "commonName"]
    if len(names) != 1 or not names[0].startswith("system:node:") or \
            ("organizationName", pki.NODES_GROUP) not in attributes:
        return None
    return names[0].removeprefix("system:node:") or None


async def serving_kubelet(request: web.Request) -> web.Response:
    node = _calling_node(request)
    if node is None:
        raise errors.Unauthorized("Unauthorized")
    body = _object(await request.read())
    addresses, hostnames, password = _names(body)
    try:
        csr = x509.load_pem_x509_csr(str(body.get("request", "")).encode())
    except ValueError:
        csr = None
    if csr is None or not csr.is_signature_valid:
        raise errors.BadRequest("request must be a PEM certificate request signed by its key")
    if csr.subject != pki.node_name(node):
        raise errors.Forbidden(f"the request's subject must be O=system:nodes, "
                               f"CN=system:node:{node}: a node renews only its own certificate")
    objects, registry = request.app[STORE_KEY]
    await check_node_password(objects, registry, node, password)
    certs = request.app[PKI_KEY]
    chain = await asyncio.to_thread(pki.sign_node_serving, certs, node, csr.public_key(),
                                    addresses, hostnames)
    return responses.json_response({"servingCert": chain.decode(),
                                    "ca": pki.ca_pem(certs).decode()})


def _read_bootstrap_files(server_dir: str) -> dict[str, str]:
    files = {}
    for name in BOOTSTRAP_FILES:
        try:
            with open(os.path.join(server_dir, name), encoding="utf-8") as f:
                files[name] = f.read()
        except FileNotFoundError:
            continue
    return files


async def server_bootstrap(request: web.Request) -> web.Response:
    from k8py.server.store.etcd import EtcdBackend

    certs = request.app[PKI_KEY]
    given = _bearer(request)
    if not given or not hmac.compare_digest(given.encode(), pki.join_secret(certs).encode()):
        raise errors.Unauthorized("Unauthorized")
    objects, _ = request.app[STORE_KEY]
    backend = objects.backend
    if not isinstance(backend, EtcdBackend) or not os.path.exists(
            os.path.join(certs.tls_dir, "etcd", "server-ca.key")):
        raise errors.BadRequest("this server runs no embedded etcd: a server can join only a "
                                "cluster started with --cluster-init")
    members = await backend.client.member_list()
    files = await asyncio.to_thread(_read_bootstrap_files, os.path.dirname(certs.tls_dir))
    return responses.json_response({
        "files": files,
        "etcdMembers": [{"name": m.name, "clientURLs": list(m.clientURLs),
                         "peerURLs": list(m.peerURLs), "isLearner": m.isLearner}
                        for m in members]})
