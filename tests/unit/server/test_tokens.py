"""Service-account tokens without a server: JWS signing and verification with RSA and ECDSA
keys, the claims' time checks (with go-jose's minute of leeway), and upstream's long-lived
pod-bound tokens, against the memory store."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from k8py.api import errors
from k8py.api.resources import Registry
from k8py.server.apiserver.storage import ObjectStore
from k8py.server.apiserver.tokens import (EXTENDED_EXPIRATION, InvalidToken, ServiceAccountTokens,
                                          SigningKey)
from k8py.server.store import open_backend

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("private", [RSA_KEY, ec.generate_private_key(ec.SECP256R1())],
                         ids=["RS256", "ES256"])
def test_sign_and_verify(private):
    key = SigningKey(private)
    token = key.sign({"sub": "x", "n": 1})
    header = json.loads(_unb64(token.split(".")[0]))
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    assert header == {"alg": key.alg, "kid": base64.urlsafe_b64encode(
        hashlib.sha256(der).digest()).rstrip(b"=").decode()}
    assert key.verify(token) == {"sub": "x", "n": 1}
    head, payload, signature = token.split(".")
    other = base64.urlsafe_b64encode(b'{"sub":"y","n":1}').rstrip(b"=").decode()
    none = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    stranger = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048)
                          if key.alg == "RS256" else ec.generate_private_key(ec.SECP256R1()))
    for bad in (f"{head}.{other}.{signature}",  # another payload under this signature
                f"{head}.{payload}.", f"{head}.{payload}", token + "x", "a.b.c", "..",
                f"{none}.{payload}.",  # alg none
                stranger.sign({"sub": "x", "n": 1}),  # the right algorithm, another key
                "x" * 20000):
        with pytest.raises(InvalidToken):
            key.verify(bad)
    jwk = key.jwk()
    assert jwk["kid"] == key.kid and jwk["alg"] == key.alg and jwk["use"] == "sig"


def test_other_keys_are_refused():
    with pytest.raises(ValueError):
        SigningKey(ec.generate_private_key(ec.SECP384R1()))


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def issuer():
    backend = open_backend("memory://", "")
    await backend.start()
    registry = Registry()
    objects = ObjectStore(backend)
    clock = Clock()
    tokens = ServiceAccountTokens(objects, registry, SigningKey(RSA_KEY), clock=clock,
                                  lookup_seconds=0)
    sa = registry.get("", "v1", "serviceaccounts")
    account = await objects.create(sa, {"apiVersion": "v1", "kind": "ServiceAccount",
                                        "metadata": {"name": "robot", "namespace": "default",
                                                     "uid": "sa-uid"}})
    try:
        yield tokens, clock, objects, registry, account
    finally:
        await backend.close()


async def test_time_claims_allow_a_minute_of_skew(issuer):
    tokens, clock, *_ = issuer
    answer = await tokens.request("default", "robot", {"spec": {"expirationSeconds": 600}})
    token = answer["status"]["token"]
    start = clock.now
    user = await tokens.authenticate(token)
    assert user.name == "system:serviceaccount:default:robot" and user.uid == "sa-uid"
    assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:default",
                           "system:authenticated")
    assert list(user.extra) == ["authentication.kubernetes.io/credential-id"]
    clock.now = start + 600 + 59
    assert await tokens.authenticate(token) is not None
    clock.now = start + 600 + 61
    assert await tokens.authenticate(token) is None  # expired
    clock.now = start - 59
    assert await tokens.authenticate(token) is not None
    clock.now = start - 61
    assert await tokens.authenticate(token) is None  # not valid yet


async def test_claims_are_checked_as_upstream(issuer):
    tokens, clock, *_ = issuer
    good = tokens.key.verify((await tokens.request("default", "robot", {}))["status"]["token"])
    assert await tokens.authenticate(tokens.key.sign(good)) is not None
    for change in ({"iss": "https://elsewhere"}, {"aud": ["other"]}, {"aud": "other"},
                   {"sub": "system:serviceaccount:default:admin"}, {"exp": "never"},
                   {"kubernetes.io": {"namespace": "default",
                                      "serviceaccount": {"name": "robot", "uid": "old"}}},
                   {"kubernetes.io": None}):
        assert await tokens.authenticate(tokens.key.sign({**good, **change})) is None, change
    assert await tokens.authenticate(tokens.key.sign({**good, "aud": good["aud"][0]}))


async def test_pod_bound_3607_seconds_tokens_live_a_year(issuer):
    tokens, clock, objects, registry, _ = issuer
    pods = registry.get("", "v1", "pods")
    nodes = registry.get("", "v1", "nodes")
    await objects.create(nodes, {"apiVersion": "v1", "kind": "Node",
                                 "metadata": {"name": "n1", "uid": "node-uid"}})
    pod = await objects.create(pods, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "uid": "pod-uid"},
        "spec": {"serviceAccountName": "robot", "nodeName": "n1", "containers": []}})
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "p"}
    answer = await tokens.request("default", "robot", {"spec": {
        "expirationSeconds": 3607, "boundObjectRef": ref}})
    claims = tokens.key.verify(answer["status"]["token"])
    assert claims["exp"] - claims["iat"] == EXTENDED_EXPIRATION
    assert claims["kubernetes.io"]["warnafter"] == claims["iat"] + 3607
    assert claims["kubernetes.io"]["pod"] == {"name": "p", "uid": "pod-uid"}
    assert claims["kubernetes.io"]["node"] == {"name": "n1", "uid": "node-uid"}
    user = await tokens.authenticate(answer["status"]["token"])
    assert user.extra["authentication.kubernetes.io/pod-name"] == ["p"]
    assert user.extra["authentication.kubernetes.io/node-name"] == ["n1"]
    # other audiences: no extension
    answer = await tokens.request("default", "robot", {"spec": {
        "expirationSeconds": 3607, "boundObjectRef": ref, "audiences": ["vault"]}})
    claims = tokens.key.verify(answer["status"]["token"])
    assert claims["exp"] - claims["iat"] == 3607 and "warnafter" not in claims["kubernetes.io"]

    # a pod marked for deletion keeps its tokens for 60 s past its deletion time
    token = (await tokens.request("default", "robot", {"spec": {"boundObjectRef": ref}})
             )["status"]["token"]
    marked = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp":
                                  "2027-01-15T08:00:00Z"}}  # 1_800_000_000 is 08:00:00
    await objects.update(pods, marked, int(pod["metadata"]["resourceVersion"]))
    clock.now = 1_800_000_000 + 59
    assert await tokens.authenticate(token) is not None
    clock.now = 1_800_000_000 + 61
    assert await tokens.authenticate(token) is None


async def test_secret_binding_and_large_durations(issuer):
    tokens, clock, objects, registry, _ = issuer
    secrets = registry.get("", "v1", "secrets")
    secret = await objects.create(secrets, {"apiVersion": "v1", "kind": "Secret",
                                            "metadata": {"name": "s", "namespace": "default",
                                                         "uid": "secret-uid"}})
    answer = await tokens.request("default", "robot", {"spec": {"boundObjectRef": {
        "kind": "Secret", "apiVersion": "v1", "name": "s", "uid": "secret-uid"}}})
    token = answer["status"]["token"]
    assert tokens.key.verify(token)["kubernetes.io"]["secret"] == {"name": "s",
                                                                   "uid": "secret-uid"}
    assert await tokens.authenticate(token) is not None
    await objects.delete(secrets, "default", "s", int(secret["metadata"]["resourceVersion"]))
    assert await tokens.authenticate(token) is None
    with pytest.raises(errors.Invalid):
        await tokens.request("default", "robot", {"spec": {"expirationSeconds": 2**32 + 1}})
    with pytest.raises(errors.BadRequest):
        await tokens.request("default", "robot", {"spec": {"expirationSeconds": "1h"}})
