"""Service-account tokens against a real server: TokenRequest, the tokens as bearer
credentials (bound to pods, accounts that go away, audiences, forgeries), and the issuer's
discovery documents; and `k8py server` as a process, whose signing key outlives a restart."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time

import aiohttp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from k8py.server.apiserver.tokens import LOOKUP_SECONDS, SigningKey
from tests.e2e.conftest import find_kubectl, free_port

SA = "/api/v1/namespaces/default/serviceaccounts"
PODS = "/api/v1/namespaces/default/pods"
ISSUER = "https://kubernetes.default.svc.cluster.local"


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def header_of(token: str) -> dict:
    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))


async def make_account(client, name: str) -> dict:
    status, body = await client.request("POST", SA, {"metadata": {"name": name}})
    assert status == 201, body
    return body


async def make_pod(client, name: str, account: str) -> dict:
    status, body = await client.request("POST", PODS, {
        "metadata": {"name": name},
        "spec": {"serviceAccountName": account,
                 "containers": [{"name": "c", "image": "busybox"}]}})
    assert status == 201, body
    return body


async def request_token(client, account: str, spec: dict | None = None):
    return await client.request("POST", f"{SA}/{account}/token",
                                {"apiVersion": "authentication.k8s.io/v1",
                                 "kind": "TokenRequest", "spec": spec or {}})


async def as_bearer(server, token: str, path: str = "/api/v1") -> int:
    """The status of a GET made with only the token (no client certificate), by default of
    a discovery path, which every authenticated user may read."""
    connector = aiohttp.TCPConnector(ssl=server.ssl(client_cert=False))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(server.url + path,
                               headers={"Authorization": f"Bearer {token}"}) as response:
            await response.read()
            return response.status


async def eventually_status(server, token: str, wanted: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (status := await as_bearer(server, token)) != wanted:
        assert time.monotonic() < deadline, f"still {status}, wanted {wanted}"
        await asyncio.sleep(0.2)


async def test_token_request_issues_a_token_that_authenticates(client, server):
    account = await make_account(client, "robot")
    before = int(time.time())
    status, body = await request_token(client, "robot")
    assert status == 201, body
    assert body["kind"] == "TokenRequest" and body["apiVersion"] == "authentication.k8s.io/v1"
    assert body["metadata"]["name"] == "robot" and body["metadata"]["namespace"] == "default"
    assert body["spec"] == {"audiences": [ISSUER], "expirationSeconds": 3600,
                            "boundObjectRef": None}
    token = body["status"]["token"]
    claims = claims_of(token)
    assert claims["iss"] == ISSUER and claims["aud"] == [ISSUER]
    assert claims["sub"] == "system:serviceaccount:default:robot"
    assert before <= claims["iat"] == claims["nbf"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["kubernetes.io"] == {
        "namespace": "default",
        "serviceaccount": {"name": "robot", "uid": account["metadata"]["uid"]}}
    assert len(claims["jti"]) == 36
    header = header_of(token)
    assert header["alg"] in ("ES256", "RS256") and header["kid"]
    expires = time.strptime(body["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(expires) - time.mktime(time.gmtime(claims["iat"])) - 3600) <= 1

    assert await as_bearer(server, token) == 200
    assert await as_bearer(server, token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")) \
        == 401

    status, body = await request_token(client, "robot", {"expirationSeconds": 7200,
                                                         "audiences": ["a", ISSUER]})
    assert status == 201
    claims = claims_of(body["status"]["token"])
    assert claims["exp"] - claims["iat"] == 7200 and claims["aud"] == ["a", ISSUER]
    assert await as_bearer(server, body["status"]["token"]) == 200


async def test_token_request_refusals_are_upstreams(client):
    await make_account(client, "robot")
    status, body = await request_token(client, "robot", {"expirationSeconds": 60})
    assert status == 422, body
    assert body["reason"] == "Invalid"
    assert body["message"] == ('TokenRequest.authentication.k8s.io "" is invalid: '
                               "spec.expirationSeconds: Invalid value: 60: may not specify a "
                               "duration less than 10 minutes")
    status, body = await request_token(client, "nobody")
    assert status == 404 and body["message"] == 'serviceaccounts "nobody" not found'
    status, body = await client.request("POST", f"{SA}/robot/token", {
        "metadata": {"name": "other"}, "spec": {}})
    assert status == 422 and "must match the service account name" in body["message"]
    status, body = await client.request("GET", f"{SA}/robot/token")
    assert status == 405
    status, body = await request_token(client, "robot", {"boundObjectRef": {
        "kind": "ConfigMap", "apiVersion": "v1", "name": "x"}})
    assert status == 400 and body["message"] == (
        'cannot bind token for serviceaccount "robot" to object of type /v1, Kind=ConfigMap.')
    status, body = await request_token(client, "robot", {"boundObjectRef": {
        "kind": "Pod", "apiVersion": "v1", "name": "missing"}})
    assert status == 404 and body["message"] == 'pods "missing" not found'


async def test_wrong_audience_and_forged_tokens_are_refused(client, server):
    await make_account(client, "robot")
    status, body = await request_token(client, "robot", {"audiences": ["vault"]})
    assert status == 201
    assert claims_of(body["status"]["token"])["aud"] == ["vault"]
    assert await as_bearer(server, body["status"]["token"]) == 401

    status, body = await request_token(client, "robot")
    good = body["status"]["token"]
    claims = claims_of(good)
    # the same claims, signed by a key the server does not know
    assert await as_bearer(server, SigningKey.generate().sign(claims)) == 401
    # the server's own header with an "alg": "none" token and no signature
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    assert await as_bearer(server, f"{unsigned}.{good.split('.')[1]}.") == 401
    # another payload under the server's signature
    forged = dict(claims, sub="system:serviceaccount:kube-system:admin")
    payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    head, _, signature = good.split(".")
    assert await as_bearer(server, f"{head}.{payload}.{signature}") == 401
    assert await as_bearer(server, good) == 200


async def test_deleting_the_account_or_the_bound_pod_invalidates_tokens(client, server):
    await make_account(client, "robot")
    pod = await make_pod(client, "worker", "robot")
    uid = pod["metadata"]["uid"]
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "worker", "uid": uid}
    status, body = await request_token(client, "robot", {"boundObjectRef": ref})
    assert status == 201, body
    assert body["spec"]["boundObjectRef"] == ref
    bound = body["status"]["token"]
    assert claims_of(bound)["kubernetes.io"]["pod"] == {"name": "worker", "uid": uid}
    assert await as_bearer(server, bound) == 200
    status, body = await request_token(client, "robot")
    unbound = body["status"]["token"]

    status, body = await request_token(client, "robot", {"boundObjectRef": {**ref,
                                                                           "uid": "other"}})
    assert status == 409 and body["reason"] == "Conflict"
    await make_account(client, "intruder")
    status, body = await request_token(client, "intruder", {"boundObjectRef": ref})
    assert status == 400 and body["message"] == (
        'cannot bind token for serviceaccount "intruder" to pod running with different '
        "serviceaccount name.")

    status, _ = await client.request("DELETE", f"{PODS}/worker")
    assert status == 200
    await eventually_status(server, bound, 401, LOOKUP_SECONDS + 10)
    assert await as_bearer(server, unbound) == 200

    status, _ = await client.request("DELETE", f"{SA}/robot")
    assert status == 200
    await make_account(client, "robot")  # the same name, another uid
    await eventually_status(server, unbound, 401, LOOKUP_SECONDS + 10)


async def test_issuer_discovery_and_jwks_verify_tokens(client, server):
    status, config = await client.request("GET", "/.well-known/openid-configuration")
    assert status == 200
    assert config["issuer"] == ISSUER
    assert config["jwks_uri"] == server.url + "/openid/v1/jwks"
    assert config["response_types_supported"] == ["id_token"]
    assert config["subject_types_supported"] == ["public"]
    async with client.session.get(server.url + "/openid/v1/jwks") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/jwk-set+json"
        jwks = json.loads(await response.read())
    [jwk] = jwks["keys"]
    assert jwk["use"] == "sig" and jwk["alg"] in config["id_token_signing_alg_values_supported"]
    assert await as_bearer(server, "x", "/openid/v1/jwks") == 401  # authenticated users only

    await make_account(client, "robot")
    _, body = await request_token(client, "robot")
    token = body["status"]["token"]
    assert header_of(token)["kid"] == jwk["kid"]
    verify_with_jwk(token, jwk)

    _, discovered = await client.request("GET", "/api/v1")
    [entry] = [r for r in discovered["resources"] if r["name"] == "serviceaccounts/token"]
    assert entry == {"name": "serviceaccounts/token", "singularName": "", "namespaced": True,
                     "group": "authentication.k8s.io", "version": "v1",
                     "kind": "TokenRequest", "verbs": ["create"]}


def _int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def verify_with_jwk(token: str, jwk: dict) -> None:
    """Check a token's signature with nothing but the published JWK (raises if bad)."""
    head, payload, signature = token.split(".")
    signed = f"{head}.{payload}".encode()
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    if jwk["kty"] == "RSA":
        key = rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"])).public_key()
        key.verify(raw, signed, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert jwk["crv"] == "P-256"
        key = ec.EllipticCurvePublicNumbers(_int(jwk["x"]), _int(jwk["y"]),
                                            ec.SECP256R1()).public_key()
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                   int.from_bytes(raw[32:], "big"))
        key.verify(der, signed, ec.ECDSA(hashes.SHA256()))


def test_server_process_keeps_its_signing_key_across_restarts(tmp_path):
    """`k8py server`: an RSA service.key (0600) signs RS256 tokens that `kubectl create token`
    prints, and that still authenticate after a restart."""
    data_dir = tmp_path / "data"
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig.yaml"
    env = {**os.environ, "HOME": str(tmp_path)}

    def start():
        proc = subprocess.Popen(
            [sys.executable, "-m", "k8py", "server", "--data-dir", str(data_dir),
             "--bind-address", "127.0.0.1", "--https-listen-port", str(port),
             "--write-kubeconfig", str(kubeconfig), "--disable-agent"],
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "the server exited"
            if "wrote admin kubeconfig" in line:
                # keep draining stderr so the server never blocks on a full pipe
                threading.Thread(target=proc.stderr.read, daemon=True).start()
                return proc
        raise AssertionError("the server did not start")

    def create_token() -> str:
        deadline = time.monotonic() + 20
        while True:  # the default service account comes from its controller
            result = subprocess.run([find_kubectl(), "--kubeconfig", str(kubeconfig),
                                     "--cache-dir", str(tmp_path / "cache"), "create",
                                     "token", "default"],
                                    capture_output=True, text=True, env=env, timeout=30)
            if result.returncode == 0:
                return result.stdout.strip()
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.2)

    def status_with(token: str) -> int:
        context = ssl.create_default_context(
            cafile=str(data_dir / "server" / "tls" / "server-ca.crt"))
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                                 timeout=10)
        try:
            connection.request("GET", "/api/v1",
                               headers={"Authorization": f"Bearer {token}"})
            return connection.getresponse().status
        finally:
            connection.close()

    proc = start()
    try:
        key_file = data_dir / "server" / "tls" / "service.key"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert isinstance(SigningKey.load(str(key_file)).public, rsa.RSAPublicKey)
        token = create_token()
        assert header_of(token)["alg"] == "RS256"
        assert status_with(token) == 200
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        proc = start()
        assert status_with(token) == 200
        assert status_with(SigningKey.generate().sign(claims_of(token))) == 401
    finally:
        proc.kill()
        proc.wait()


async def test_a_token_says_who_it_is(client, server):
    await make_account(client, "whoami")
    _, body = await request_token(client, "whoami")
    connector = aiohttp.TCPConnector(ssl=server.ssl(client_cert=False))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
                server.url + "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                headers={"Authorization": f"Bearer {body['status']['token']}"}) as response:
            assert response.status == 201
            review = await response.json()
    info = review["status"]["userInfo"]
    assert info["username"] == "system:serviceaccount:default:whoami"
    assert info["groups"] == ["system:serviceaccounts", "system:serviceaccounts:default",
                              "system:authenticated"]
    assert info.get("uid")
