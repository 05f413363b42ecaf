"""Joining agents: /cacerts for anyone; node credentials only for the join token's secret;
the issued client certificate is the node's identity, the serving certificate its names."""

from __future__ import annotations

import hashlib
import ipaddress
import ssl

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k8py.server import pki
from k8py.server.apiserver.authn import USER_KEY

from tests.integration.inloop import Server, running_apiserver

BODY = {"nodeName": "worker-1", "addresses": ["10.9.8.7", "fd00::7"],
        "hostnames": ["worker-1.example"], "nodePassword": "0123456789abcdef0123"}


async def whoami(request: web.Request) -> web.Response:
    user = request[USER_KEY]
    return web.json_response({"name": user.name, "groups": list(user.groups)})


@pytest.fixture
async def server(tmp_path):
    """The API server with the join endpoints (the shared fixture's app has none)."""
    def add_whoami(app: web.Application) -> None:
        app.router.add_get("/test/whoami", whoami)  # what authn made of the caller

    async with running_apiserver(tmp_path, join=True, customize=add_whoami) as running:
        yield running


async def _post(server: Server, body, token: str | None, *, client_cert: bool = False):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    connector = aiohttp.TCPConnector(ssl=server.ssl(client_cert=client_cert))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(server.url + "/v1-k8py/node-credentials", json=body,
                                headers=headers) as response:
            return response.status, await response.json(content_type=None)


def _secret(server: Server) -> str:
    return pki.read_token(server.certs).split("::server:", 1)[1]


async def test_cacerts_is_anonymous_and_matches_the_token_hash(server):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # as a joining agent
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.get(server.url + "/cacerts") as response:
            assert response.status == 200
            body = await response.read()
    with open(server.certs.ca_cert, "rb") as f:
        assert body == f.read()
    token = pki.read_token(server.certs)
    assert token == f"K10{hashlib.sha256(body).hexdigest()}::server:{_secret(server)}"


@pytest.mark.parametrize("token", [None, "", "wrong", "K10abc::server:wrong"])
async def test_node_credentials_need_the_secret(server, token):
    status, body = await _post(server, BODY, token)
    assert status == 401, body
    assert body["kind"] == "Status" and body["code"] == 401


async def test_the_admin_certificate_does_not_replace_the_secret(server):
    status, _ = await _post(server, BODY, None, client_cert=True)
    assert status == 401


async def test_the_whole_token_is_not_the_secret(server):
    status, _ = await _post(server, BODY, pki.read_token(server.certs))
    assert status == 401


@pytest.mark.parametrize("body", [
    {"nodeName": "Bad_Name"},
    {"nodeName": ""},
    {},
    {"nodeName": "a" * 254},
    {"nodeName": "ok", "addresses": ["not-an-ip"]},
    {"nodeName": "ok", "addresses": "10.0.0.1"},
    {"nodeName": "ok", "hostnames": ["under_score"]},
    ["nodeName"],
])
async def test_bad_requests_are_400(server, body):
    status, answer = await _post(server, body, _secret(server))
    assert status == 400, answer
    assert answer["kind"] == "Status" and answer["reason"] == "BadRequest"


async def test_issued_credentials(server, tmp_path):
    status, body = await _post(server, BODY, _secret(server))
    assert status == 200, body
    with open(server.certs.ca_cert) as f:
        assert body["ca"] == f.read()
    ca = x509.load_pem_x509_certificate(body["ca"].encode())

    serving = x509.load_pem_x509_certificate(body["servingCert"].encode())
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"worker-1", "worker-1.example", "localhost"} <= set(
        sans.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address(a) for a in ("10.9.8.7", "fd00::7", "127.0.0.1")} <= set(
        sans.get_values_for_type(x509.IPAddress))
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]

    client = x509.load_pem_x509_certificate(body["clientCert"].encode())
    client.verify_directly_issued_by(ca)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "system:node:worker-1"
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "system:nodes"

    # the client certificate is the node's identity on the API
    for name in ("client.crt", "client.key"):
        (tmp_path / name).write_text(body["clientCert" if name.endswith("crt") else "clientKey"])
    context = ssl.create_default_context(cadata=body["ca"])
    context.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.post(
                server.url + "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                json={"apiVersion": "authentication.k8s.io/v1",
                      "kind": "SelfSubjectReview"}) as response:
            info = (await response.json())["status"]["userInfo"]
            assert (info["username"], info["groups"]) == (
                "system:node:worker-1", ["system:nodes", "system:authenticated"])
        async with session.get(server.url + "/api/v1/nodes") as response:
            assert response.status == 200


async def test_each_request_issues_new_keys(server):
    _, first = await _post(server, BODY, _secret(server))
    _, second = await _post(server, BODY, _secret(server))
    assert first["clientKey"] != second["clientKey"]


# --- node passwords and bootstrap tokens -----------------------------------------------------

async def _ask(server, body, bearer):
    import ssl as ssl_module
    context = ssl_module.create_default_context(cafile=server.certs.ca_cert)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.post(server.url + "/v1-k8py/node-credentials", json=body,
                                headers={"Authorization": f"Bearer {bearer}"}) as response:
            return response.status, await response.json(content_type=None)


async def test_a_second_host_claiming_a_node_name_is_refused(server):
    secret = pki.join_secret(server.certs)
    body = {**BODY, "nodeName": "claimed"}
    assert (await _ask(server, body, secret))[0] == 200
    assert (await _ask(server, body, secret))[0] == 200  # the same node again: fine
    status, answer = await _ask(server, {**body, "nodePassword": "another-password-xyz"},
                                 secret)
    assert status == 403 and "node password rejected" in answer["message"]
    assert "\n" not in answer["message"]
    status, answer = await _ask(server, {k: v for k, v in body.items()
                                          if k != "nodePassword"}, secret)
    assert status == 400 and "nodePassword" in answer["message"]


async def test_bootstrap_tokens_join_until_they_expire(server):
    import base64

    from k8py.api.resources import builtin
    from k8py.server.apiserver import app as apiserver

    objects = server.app[apiserver.REST_KEY].objects
    secrets = builtin("v1", "secrets")

    def token(token_id, secret, expiration):
        data = {"token-id": token_id, "token-secret": secret,
                "usage-bootstrap-authentication": "true", "expiration": expiration}
        return {"metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system",
                             "uid": token_id, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "type": "bootstrap.kubernetes.io/token",
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    await objects.create(secrets, token("abcdef", "0123456789abcdef", "2999-01-01T00:00:00Z"))
    await objects.create(secrets, token("oldtok", "0123456789abcdef", "2000-01-01T00:00:00Z"))
    body = {**BODY, "nodeName": "bootstrapped"}
    assert (await _ask(server, body, "abcdef.0123456789abcdef"))[0] == 200
    assert (await _ask(server, body, "abcdef.0123456789abcdeX"))[0] == 401
    assert (await _ask(server, body, "oldtok.0123456789abcdef"))[0] == 401
    assert (await _ask(server, body, "nonexs.0123456789abcdef"))[0] == 401


async def _bootstrap(server: Server, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    connector = aiohttp.TCPConnector(ssl=server.ssl())
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(server.url + "/v1-k8py/server-bootstrap",
                               headers=headers) as response:
            return response.status, await response.json(content_type=None)


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_server_bootstrap_needs_the_server_secret(server, token):
    status, body = await _bootstrap(server, token)
    assert status == 401 and body["kind"] == "Status"


async def test_server_bootstrap_needs_an_embedded_etcd(server):
    status, body = await _bootstrap(server, _secret(server))
    assert status == 400 and "--cluster-init" in body["message"]


def test_a_joining_server_writes_only_the_shared_files(tmp_path):
    import os
    import stat

    from k8py.server.serverjoin import _write_files

    _write_files(str(tmp_path), {"tls/server-ca.key": "KEY", "../evil": "x",
                                 "tls/etcd/peer-ca.crt": "CERT", "token": "t"})
    assert (tmp_path / "tls" / "server-ca.key").read_text() == "KEY"
    assert (tmp_path / "tls" / "etcd" / "peer-ca.crt").read_text() == "CERT"
    assert stat.S_IMODE(os.stat(tmp_path / "tls" / "server-ca.key").st_mode) == 0o600
    assert not (tmp_path.parent / "evil").exists() and not (tmp_path / "token").exists()
