"""Service-account tokens: the TokenRequest API that issues them, and their verification as
bearer tokens, both as upstream (`pkg/registry/core/serviceaccount/storage/token.go`,
`pkg/serviceaccount/claims.go`, `jwt.go`).

Issuing (POST `serviceaccounts/<name>/token`, an authentication.k8s.io/v1 TokenRequest):
- `spec.audiences` defaults to the API server's audiences (the issuer);
  `spec.expirationSeconds` to 3600, and less than 600 (or more than 2^32) is a 422;
- `spec.boundObjectRef` binds the token to a live Pod, Secret or Node (name, and uid when
  given: a different uid is a 409); a Pod must run as this service account (else 400). A
  pod-bound token names the pod's node too;
- a pod-bound token asked for with exactly 3607 s for the API server's own audiences lives a
  year instead (upstream's `--service-account-extend-token-expiration`, on by default: the
  kubelet asks for 3607 s and refreshes at 80 %, so an old client that never re-reads its
  token keeps working); `status.expirationTimestamp` still says 3607 s;
- the answer carries `status.token` and `status.expirationTimestamp`; nothing is stored.

A token is a JWS (compact form) signed with the server's key: RS256 for an RSA key (what
`pki.ensure_service_key` creates), ES256 for an ECDSA P-256 key; the header's `kid` is the
unpadded base64url SHA-256 of the public key's DER, as upstream. Its claims: `iss`, `sub`
(`system:serviceaccount:<ns>:<name>`), `aud` (a list), `exp`, `iat`, `nbf`, `jti`, and
`kubernetes.io` (`namespace`, `serviceaccount`, and `pod`/`node`/`secret` refs, each
`{name, uid}`; `warnafter` for extended tokens).

Verifying (`authenticate`, for every request with a bearer token the token file does not
know): the algorithm must be ours (never `none`, never a MAC), the signature good, the
issuer ours, some audience one of the API server's, `exp`/`nbf`/`iat` right within a
minute's leeway (go-jose's); then, as upstream's bound-token validation, the service account
and any bound object must still exist with the same uid, and not have been marked for
deletion more than 60 s ago (a deleted pod's kubelet may still need to finish). Those
lookups are cached for a few seconds, so a deleted pod's tokens stop working within
`LOOKUP_SECONDS`. The user is `system:serviceaccount:<ns>:<name>` in the groups
`system:serviceaccounts`, `system:serviceaccounts:<ns>` and `system:authenticated`.

Tokens and keys are secrets: nothing here logs them, and errors never quote them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)

from k8py.api import errors, timestamps
from k8py.api.resources import Registry
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.storage import ObjectStore

log = logging.getLogger(__name__)

API_VERSION = "authentication.k8s.io/v1"
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32
WARN_ONLY_EXPIRATION = 3607  # the kubelet's projected-token default
EXTENDED_EXPIRATION = 365 * 24 * 3600
LEEWAY = 60  # seconds of clock skew allowed on exp, nbf and iat (go-jose's default)
DELETION_GRACE = 60  # a bound object marked for deletion keeps its tokens valid this long
LOOKUP_SECONDS = 2.0  # how long authentication trusts a lookup of an account or bound object
MAX_TOKEN_BYTES = 16 * 1024

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
ALL_SERVICE_ACCOUNTS = "system:serviceaccounts"
AUTHENTICATED = "system:authenticated"


def issuer_for(cluster_domain: str) -> str:
    return f"https://kubernetes.default.svc.{cluster_domain}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _audiences(claims: dict[str, Any], wanted: list[str]) -> list[str]:
    """The audiences of `wanted` the token's `aud` claim names."""
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else audiences
    if not isinstance(audiences, list):
        return []
    return [a for a in wanted if a in audiences]


class InvalidToken(Exception):
    """A token that is not (or no longer) good. The message never quotes the token."""


class SigningKey:
    """A private key that signs JWS tokens, and its public half as a JWK."""

    def __init__(self, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        if isinstance(private_key, rsa.RSAPrivateKey):
            self.alg = "RS256"
        elif isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
                private_key.curve, ec.SECP256R1):
            self.alg = "ES256"
        else:
            raise ValueError("the service-account key must be RSA or ECDSA P-256")
        self._private = private_key
        self.public = private_key.public_key()
        der = self.public.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = _b64(hashlib.sha256(der).digest())
        self._header = _b64(json.dumps({"alg": self.alg, "kid": self.kid},
                                       separators=(",", ":")).encode())

    @classmethod
    def load(cls, path: str) -> "SigningKey":
        with open(path, "rb") as f:
            return cls(serialization.load_pem_private_key(f.read(), None))

    @classmethod
    def generate(cls) -> "SigningKey":
        """A key that lives as long as the process: for servers started without a key file
        (tests, benchmarks). ECDSA because it is made in a millisecond."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def sign(self, claims: dict[str, Any]) -> str:
        payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        signing_input = f"{self._header}.{payload}".encode("ascii")
        if self.alg == "RS256":
            signature = self._private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(self._private.sign(signing_input,
                                                           ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{self._header}.{payload}.{_b64(signature)}"

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this key signed; InvalidToken for anything else."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("token too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("not a compact JWS")
        try:
            header = json.loads(_unb64(parts[0]))
            signature = _unb64(parts[2])
        except (ValueError, binascii.Error):
            raise InvalidToken("malformed token") from None
        if not isinstance(header, dict) or header.get("alg") != self.alg:
            raise InvalidToken("unexpected signing algorithm")
        if header.get("kid", self.kid) != self.kid or "crit" in header:
            raise InvalidToken("signed by another key")
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
        try:
            if self.alg == "RS256":
                self.public.verify(signature, signing_input, padding.PKCS1v15(),
                                   hashes.SHA256())
            else:
                if len(signature) != 64:
                    raise InvalidToken("bad signature")
                der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                           int.from_bytes(signature[32:], "big"))
                self.public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise InvalidToken("bad signature") from None
        try:
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, binascii.Error):
            raise InvalidToken("malformed claims") from None
        if not isinstance(claims, dict):
            raise InvalidToken("malformed claims")
        return claims

    def jwk(self) -> dict[str, str]:
        """The public key as upstream's JWKS lists it."""
        if self.alg == "RS256":
            numbers = self.public.public_numbers()
            return {"use": "sig", "kty": "RSA", "kid": self.kid, "alg": self.alg,
                    "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                    "e": _b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))}
        numbers = self.public.public_numbers()
        return {"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": self.alg,
                "x": _b64(numbers.x.to_bytes(32, "big")),
                "y": _b64(numbers.y.to_bytes(32, "big"))}


def _ref(obj: dict[str, Any]) -> dict[str, str]:
    return {"name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"]}


def _deleted_long_ago(obj: dict[str, Any], now: float) -> bool:
    deleted = timestamps.parse(obj["metadata"].get("deletionTimestamp"))
    return deleted is not None and deleted < now - DELETION_GRACE


class ServiceAccountTokens:
    """The issuer: answers TokenRequests and authenticates the tokens it gave out."""

    def __init__(self, objects: ObjectStore, registry: Registry, key: SigningKey | None = None,
                 *, cluster_domain: str = "cluster.local",
                 audiences: tuple[str, ...] | None = None,
                 clock: Callable[[], float] = time.time,
                 lookup_seconds: float = LOOKUP_SECONDS):
        self.objects = objects
        self.key = key or SigningKey.generate()
        self.issuer = issuer_for(cluster_domain)
        self.audiences = tuple(audiences or (self.issuer,))  # upstream's --api-audiences
        self.clock = clock
        self.lookup_seconds = lookup_seconds
        self._resources = {plural: registry.get("", "v1", plural)
                           for plural in ("serviceaccounts", "pods", "secrets", "nodes")}
        self._lookups: dict[tuple[str, str | None, str], tuple[float, dict | None]] = {}

    # --- discovery ------------------------------------------------------------------------

    def openid_configuration(self, jwks_uri: str) -> dict[str, Any]:
        return {"issuer": self.issuer, "jwks_uri": jwks_uri,
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [self.key.alg]}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.jwk()]}

    # --- issuing --------------------------------------------------------------------------

    async def request(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        """Answer a TokenRequest for service account `namespace/name`."""
        if not isinstance(body, dict):
            raise errors.BadRequest("the body must be an authentication.k8s.io/v1 TokenRequest")
        if body.get("kind", "TokenRequest") != "TokenRequest" or body.get(
                "apiVersion", API_VERSION) != API_VERSION:
            raise errors.BadRequest(f"the body must be a TokenRequest of {API_VERSION}, not "
                                    f"{body.get('kind')} of {body.get('apiVersion')}")
        metadata = body.get("metadata") or {}
        spec = body.get("spec") or {}
        if not isinstance(metadata, dict) or not isinstance(spec, dict):
            raise errors.BadRequest("metadata and spec must be objects")
        for field, value, must in (("name", name, "name"), ("namespace", namespace,
                                                            "namespace")):
            given = metadata.get(field)
            if given and given != value:
                raise self._invalid(name, f"metadata.{field}", given,
                                    f"must match the service account {must} if specified")
        account = await self.objects.get(self._resources["serviceaccounts"], namespace, name)
        audiences = spec.get("audiences") or list(self.audiences)
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise errors.BadRequest("spec.audiences must be a list of strings")
        expiration = spec.get("expirationSeconds")
        if expiration is None:
            expiration = DEFAULT_EXPIRATION
        if isinstance(expiration, bool) or not isinstance(expiration, int):
            raise errors.BadRequest("spec.expirationSeconds must be an integer")
        if expiration < MIN_EXPIRATION:
            raise self._invalid("", "spec.expirationSeconds", expiration,
                                "may not specify a duration less than 10 minutes")
        if expiration > MAX_EXPIRATION:
            raise self._invalid("", "spec.expirationSeconds", expiration,
                                f"may not specify a duration larger than {MAX_EXPIRATION} "
                                "seconds", reason="FieldValueTooLong")
        now = self.clock()
        bound_ref = spec.get("boundObjectRef")
        bound = await self._bound_objects(namespace, name, bound_ref)
        lifetime, warn_after = expiration, None
        if "pod" in bound and expiration == WARN_ONLY_EXPIRATION and set(audiences) <= set(
                self.audiences):
            lifetime, warn_after = EXTENDED_EXPIRATION, expiration
        claims = self._claims(account, bound, audiences, int(now), lifetime, warn_after)
        return {
            "kind": "TokenRequest",
            "apiVersion": API_VERSION,
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": _timestamp(now)},
            "spec": {"audiences": audiences, "expirationSeconds": expiration,
                     "boundObjectRef": bound_ref or None},
            "status": {"token": self.key.sign(claims),
                       "expirationTimestamp": _timestamp(now + expiration)},
        }

    @staticmethod
    def _invalid(name: str, field: str, value: Any, message: str,
                 reason: str = "FieldValueInvalid") -> errors.Invalid:
        return errors.invalid("TokenRequest", name, [(field, reason, f"Invalid value: "
                                                      f"{json.dumps(value)}: {message}")],
                              "authentication.k8s.io")

    async def _bound_objects(self, namespace: str, account: str,
                             ref: Any) -> dict[str, dict[str, Any]]:
        """The objects a token is bound to, by claim name (`pod`, `node`, `secret`)."""
        if not ref:
            return {}
        if not isinstance(ref, dict):
            raise errors.BadRequest("spec.boundObjectRef must be an object")
        kind, api_version = ref.get("kind", ""), ref.get("apiVersion", "v1") or "v1"
        plural = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}.get(kind)
        if plural is None or api_version != "v1":
            group, _, version = api_version.rpartition("/")
            raise errors.BadRequest(f'cannot bind token for serviceaccount "{account}" to '
                                    f"object of type {group}/{version}, Kind={kind}.")
        obj = await self.objects.get(self._resources[plural],
                                     None if plural == "nodes" else namespace,
                                     ref.get("name") or "")
        if ref.get("uid") and ref["uid"] != obj["metadata"]["uid"]:
            raise errors.Conflict(
                f'Operation cannot be fulfilled on {kind} "{ref.get("name")}": the UID in the '
                f"bound object reference ({ref['uid']}) does not match the UID in record. The "
                f"object might have been deleted and then recreated",
                name=ref.get("name"), kind=kind)
        bound = {kind.lower(): obj}
        if kind == "Pod":
            spec = obj.get("spec") or {}
            if (spec.get("serviceAccountName") or "default") != account:
                raise errors.BadRequest(f'cannot bind token for serviceaccount "{account}" to '
                                        "pod running with different serviceaccount name.")
            if spec.get("nodeName"):
                try:
                    bound["node"] = await self.objects.get(self._resources["nodes"], None,
                                                           spec["nodeName"])
                except errors.NotFound:
                    pass  # as upstream: the node's claims are left out
        return bound

    def _claims(self, account: dict[str, Any], bound: dict[str, dict[str, Any]],
                audiences: list[str], now: int, lifetime: int,
                warn_after: int | None) -> dict[str, Any]:
        namespace = account["metadata"]["namespace"]
        private: dict[str, Any] = {"namespace": namespace,
                                   "serviceaccount": _ref(account)}
        for claim in ("pod", "secret", "node"):
            if claim in bound:
                private[claim] = _ref(bound[claim])
        if warn_after is not None:
            private["warnafter"] = now + warn_after
        return {"aud": audiences, "exp": now + lifetime, "iat": now, "iss": self.issuer,
                "jti": str(uuid.uuid4()), "kubernetes.io": private, "nbf": now,
                "sub": f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{account['metadata']['name']}"}

    # --- verifying ------------------------------------------------------------------------

    async def authenticate(self, token: str) -> User | None:
        """The service account a bearer token stands for, or None if it is not a good token
        of ours."""
        user, _ = await self.review(token)
        return user

    async def review(self, token: str, audiences: list[str] | None = None
                     ) -> tuple[User | None, list[str]]:
        """(the service account a token stands for, or None; the audiences, of those wanted
        (default: the API server's), that the token is good for): a TokenReview's answer."""
        if token.count(".") != 2:
            return None, []
        wanted = list(audiences or self.audiences)
        try:
            claims = self.key.verify(token)
            return await self._user(claims, wanted), _audiences(claims, wanted)
        except InvalidToken as exc:
            log.debug("service account token refused: %s", exc)
            return None, []

    async def _user(self, claims: dict[str, Any], wanted: list[str]) -> User:
        if claims.get("iss") != self.issuer:
            raise InvalidToken("issued by someone else")
        if not _audiences(claims, wanted):
            raise InvalidToken("not meant for this API server")
        now = self.clock()
        for claim in ("exp", "nbf", "iat"):
            if not isinstance(claims.get(claim), (int, float)) or isinstance(claims[claim],
                                                                                bool):
                raise InvalidToken(f"no {claim}")
        if now - LEEWAY > claims["exp"]:
            raise InvalidToken("expired")
        if now + LEEWAY < claims["nbf"] or now + LEEWAY < claims["iat"]:
            raise InvalidToken("not valid yet")
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict):
            raise InvalidToken("no kubernetes.io claims")
        namespace = private.get("namespace")
        account_ref = private.get("serviceaccount")
        if not isinstance(namespace, str) or not namespace or not isinstance(account_ref,
                                                                               dict):
            raise InvalidToken("no service account")
        name = account_ref.get("name")
        if not isinstance(name, str) or not name or claims.get(
                "sub") != f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}":
            raise InvalidToken("subject and service account disagree")
        await self._still_there("serviceaccounts", namespace, account_ref, now)
        extra: dict[str, list[str]] = {}
        for claim, plural in (("pod", "pods"), ("secret", "secrets"), ("node", "nodes")):
            ref = private.get(claim)
            if ref is None:
                continue
            if not isinstance(ref, dict):
                raise InvalidToken(f"malformed {claim} claim")
            # A pod-bound token names its node for information only, as upstream.
            if not (claim == "node" and "pod" in private):
                await self._still_there(plural, None if plural == "nodes" else namespace,
                                        ref, now)
            if claim != "secret":
                extra[f"authentication.kubernetes.io/{claim}-name"] = [str(ref.get("name"))]
                extra[f"authentication.kubernetes.io/{claim}-uid"] = [str(ref.get("uid"))]
        if isinstance(claims.get("jti"), str):
            extra["authentication.kubernetes.io/credential-id"] = [f"JTI={claims['jti']}"]
        return User(f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
                    (ALL_SERVICE_ACCOUNTS, f"{ALL_SERVICE_ACCOUNTS}:{namespace}", AUTHENTICATED),
                    uid=str(account_ref.get("uid", "")), extra=extra)

    async def _still_there(self, plural: str, namespace: str | None, ref: dict[str, Any],
                           now: float) -> None:
        name = ref.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidToken(f"malformed {plural} reference")
        obj = await self._lookup(plural, namespace, name, now)
        if obj is None or obj["metadata"].get("uid") != ref.get("uid"):
            raise InvalidToken(f"the bound {plural} object is gone")
        if _deleted_long_ago(obj, now):
            raise InvalidToken(f"the bound {plural} object is being deleted")

    async def _lookup(self, plural: str, namespace: str | None, name: str,
                      now: float) -> dict[str, Any] | None:
        key = (plural, namespace, name)
        cached = self._lookups.get(key)
        if cached is not None and now - cached[0] < self.lookup_seconds:
            return cached[1]
        try:
            obj = await self.objects.get(self._resources[plural], namespace, name)
        except errors.NotFound:
            obj = None
        if len(self._lookups) >= 4096:  # bounded: drop everything stale, or everything
            fresh = {k: v for k, v in self._lookups.items()
                     if now - v[0] < self.lookup_seconds}
            self._lookups = fresh if len(fresh) < 2048 else {}
        self._lookups[key] = (now, obj)
        return obj


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
