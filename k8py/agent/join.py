"""Joining a server with its token, as a k3s agent does, and the credentials that result.

The token is `K10<sha256 of the server's CA PEM>::server:<secret>`; only this full form is
accepted (k3s also takes a bare secret, but then cannot check the CA it is handed). Joining:

1. `GET <server>/cacerts` without verifying TLS (there is no CA to verify with yet), and
   compare the body's sha256 with the token's hash: a mismatch is fatal (`JoinError`), as a
   server in the middle would present its own CA;
2. with TLS verified against that CA, `POST <server>/v1-k8py/node-credentials` with
   `Authorization: Bearer <secret>` and the node's name, addresses and hostnames; the answer
   holds the kubelet's client certificate (user `system:node:<name>`), its serving
   certificate, their keys and the CA;
3. write them under `<data-dir>/agent/tls/` (folder 0700, files 0600): `server-ca.crt`,
   `client-kubelet.crt/.key`, `serving-kubelet.crt/.key`.

On restart the files are reused when the client certificate names this node, both
certificates were issued by a CA of the server's bundle, their keys match, the serving one
covers the node's names and addresses and both last another minute; otherwise new ones are
asked for. Renewal before they end is the running agent's (`certrotation`: through the CSR
API, without the token), so a certificate that is merely due is reused and renewed at once.
While the server cannot be reached the agent waits and retries; a refused secret or a bad
answer is fatal. Any server of the cluster will do (one CA, one join endpoint each): a
restarted agent tries the servers it learned (`agent.apiservers`' state file) after its
`--server`, so it starts while that one is down. The server keeps nothing per node: asking again issues new keys.

After `k8py certificate rotate-ca` the server's bundle no longer has the token's hash; an
agent that joined before accepts it when the server proves itself with a certificate its
stored CA (`server-ca.crt`) verifies (the rotation's cross-signed chain), and stores the new
bundle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import ssl

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from k8py import certificates
from k8py.certificates import write_private
from k8py.client.http import HttpTransport
from k8py.client.loadbalancer import ServerList

log = logging.getLogger(__name__)

TOKEN_FORM = ("K10<sha256 of the server's CA>::server:<secret> (or ::<id>.<secret>, from "
              "`k8py token create`; or the server's --token alone)")
_TOKEN = re.compile(r"K10([0-9a-f]{64})::(?:server:(\S+)|([a-z0-9]{6}\.[a-z0-9]{16}))")
_SHORT = re.compile(r"[^\s:]+")  # a secret the server was given with --token, as k3s
_RETRY_SECONDS = 2.0
_MIN_VALIDITY = datetime.timedelta(minutes=1)


class JoinError(Exception):
    """Joining cannot succeed: the message is one line for the operator."""


@dataclasses.dataclass(frozen=True)
class Token:
    ca_hash: str | None  # None: a short token; the server's CA is taken as first seen
    secret: str


def parse_token(value: str) -> Token:
    match = _TOKEN.fullmatch(value.strip())
    if match is None and _SHORT.fullmatch(value.strip()) and not value.startswith("K10"):
        return Token(None, value.strip())
    if match is None:
        raise JoinError(f"the join token must have the form {TOKEN_FORM} (the server's "
                        f"<data-dir>/server/token)")
    return Token(match.group(1), match.group(2) or match.group(3))


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Paths of the node's credentials under `<data-dir>/agent/tls/`."""
    tls_dir: str

    @property
    def ca_cert(self) -> str:
        return os.path.join(self.tls_dir, "server-ca.crt")

    @property
    def client_cert(self) -> str:
        return os.path.join(self.tls_dir, "client-kubelet.crt")

    @property
    def client_key(self) -> str:
        return os.path.join(self.tls_dir, "client-kubelet.key")

    @property
    def serving_cert(self) -> str:
        return os.path.join(self.tls_dir, "serving-kubelet.crt")

    @property
    def serving_key(self) -> str:
        return os.path.join(self.tls_dir, "serving-kubelet.key")

    def transport(self, server: str, user_agent: str = "k8py-kubelet",
                  servers: ServerList | None = None) -> HttpTransport:
        """An HTTPS transport to `server` as this node (its client certificate); with
        `servers`, failing over between them (`k8py.agent.apiservers`)."""
        tls = ssl.create_default_context(cafile=self.ca_cert)
        tls.load_cert_chain(self.client_cert, self.client_key)
        return HttpTransport(server.rstrip("/"), tls, user_agent=user_agent, servers=servers)


def node_password(path: str) -> str:
    """This node's password (generated once, kept 0600 at `path`), as k3s keeps one: the
    server remembers the first password a node name joins with and refuses another."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.read().strip()
        if password:
            return password
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    password = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(password + "\n")
    return password


async def join(server: str, token: str, tls_dir: str, node_name: str,
               addresses: tuple[str, ...] = (), hostnames: tuple[str, ...] = (),
               password_file: str | None = None,
               servers: ServerList | None = None) -> Credentials:
    """The node's credentials from `server`, reused from `tls_dir` when still good. With
    `servers` (the list the agent learned before a restart), from whichever of them answers
    first: every server has the same CA and join endpoint."""
    parsed = parse_token(token)
    server, ca_pem = await _first_ca(servers or ServerList(server))
    credentials = Credentials(tls_dir)
    if parsed.ca_hash is None:
        log.warning("the token holds no CA hash: trusting the CA %s serves now (use the "
                    "server's full token, <data-dir>/server/token, to pin it)", server)
    elif hashlib.sha256(ca_pem).hexdigest() != parsed.ca_hash:
        if not await _vouched_for(server, credentials.ca_cert, ca_pem):
            raise JoinError("the server's CA does not match the token")
        log.info("the server's CA bundle changed since joining (a CA rotation); the CA this "
                 "node trusts vouches for it")
    if _reusable(credentials, ca_pem, node_name, addresses, hostnames):
        log.info("reusing the node credentials in %s", tls_dir)
        with open(credentials.ca_cert, "rb") as f:
            if f.read() != ca_pem:
                write_private(credentials.ca_cert, ca_pem)
        return credentials
    password = node_password(password_file or os.path.join(os.path.dirname(tls_dir),
                                                           "node-password"))
    answer = await _ask(server, ca_pem, parsed.secret,
                        {"nodeName": node_name, "addresses": list(addresses),
                         "hostnames": list(hostnames), "nodePassword": password})
    _store(credentials, answer)
    log.info("joined %s as system:node:%s; credentials in %s", server, node_name, tls_dir)
    return credentials


async def wait_for_ca(server: str) -> bytes:
    """`server`'s /cacerts, once it answers."""
    return (await _first_ca(ServerList(server)))[1]


async def _first_ca(servers: ServerList) -> tuple[str, bytes]:
    """The first of `servers` to answer /cacerts, and its answer; a server that cannot be
    reached is marked failed, so the agent's requests start on another one."""
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    while True:
        for server in servers.candidates():
            try:
                async with aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(ssl=unverified),
                        timeout=aiohttp.ClientTimeout(total=10)) as session:
                    async with session.get(server + "/cacerts") as response:
                        body = await response.read()
                        if response.status == 200:
                            servers.healthy(server)
                            return server, body
                        raise JoinError(f"{server}/cacerts answered {response.status}: is "
                                        f"it a k8py server?")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                servers.failed(server)
                log.info("waiting for the server at %s: %s", server,
                         exc or type(exc).__name__)
        await asyncio.sleep(_RETRY_SECONDS)


async def _vouched_for(server: str, stored_ca: str, ca_pem: bytes) -> bool:
    """Whether `server`, verified against the CA this node stored when it joined, serves
    `ca_pem` at /cacerts."""
    if not os.path.exists(stored_ca):
        return False
    try:
        verified = ssl.create_default_context(cafile=stored_ca)
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=verified),
                timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(server + "/cacerts") as response:
                return response.status == 200 and await response.read() == ca_pem
    except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError) as exc:
        log.info("the CA this node trusts does not vouch for %s: %s", server, exc)
        return False


async def request_with_secret(server: str, ca_pem: bytes, secret: str, method: str,
                              path: str, body: dict | None = None) -> tuple[int, object]:
    """One request authenticated by a join token's secret to `server`, verified against the
    cluster CA `ca_pem`: (status, decoded JSON answer or {}). Retried while the server does
    not answer; a certificate that does not match is a JoinError at once. Agents ask for
    their node credentials this way, joining servers for the bootstrap data
    (`k8py.server.serverjoin`)."""
    verified = ssl.create_default_context(cadata=ca_pem.decode())
    while True:
        try:
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=verified),
                    timeout=aiohttp.ClientTimeout(total=30)) as session:
                async with session.request(method, server + path, json=body,
                                           headers={"Authorization": f"Bearer {secret}"}
                                           ) as response:
                    try:
                        return response.status, await response.json(content_type=None)
                    except ValueError:
                        return response.status, {}
        except aiohttp.ClientConnectorCertificateError as exc:
            raise JoinError(f"the server's certificate does not match {server}: "
                            f"{exc.certificate_error}") from None
        except ssl.SSLCertVerificationError as exc:
            raise JoinError(f"the server's certificate does not match {server}: "
                            f"{getattr(exc, 'verify_message', exc)}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("waiting for the server at %s: %s", server, exc or type(exc).__name__)
            await asyncio.sleep(_RETRY_SECONDS)


async def _ask(server: str, ca_pem: bytes, secret: str, body: dict) -> dict:
    status, answer = await request_with_secret(server, ca_pem, secret, "POST",
                                               "/v1-k8py/node-credentials", body)
    if status == 401:
        raise JoinError("the server refused the token's secret")
    if status == 403:
        message = answer.get("message") if isinstance(answer, dict) else None
        raise JoinError(message or "the server refused this node")
    if status != 200:
        message = answer.get("message") if isinstance(answer, dict) else None
        raise JoinError(f"the server refused the node credentials: {message or status}")
    if not isinstance(answer, dict) or not all(
            isinstance(answer.get(k), str) for k in
            ("clientCert", "clientKey", "servingCert", "servingKey", "ca")):
        raise JoinError("the server's node credentials are incomplete")
    return answer


def _store(credentials: Credentials, answer: dict) -> None:
    os.makedirs(credentials.tls_dir, mode=0o700, exist_ok=True)
    os.chmod(credentials.tls_dir, 0o700)
    for path, key in ((credentials.ca_cert, "ca"),
                      (credentials.client_key, "clientKey"),
                      (credentials.client_cert, "clientCert"),
                      (credentials.serving_key, "servingKey"),
                      (credentials.serving_cert, "servingCert")):
        write_private(path, answer[key].encode())


def _reusable(credentials: Credentials, ca_pem: bytes, node_name: str,
              addresses: tuple[str, ...], hostnames: tuple[str, ...]) -> bool:
    paths = (credentials.client_cert, credentials.client_key,
             credentials.serving_cert, credentials.serving_key)
    if not all(os.path.exists(p) for p in paths):
        return False
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
        now = certificates.now()
        for cert_path, key_path in ((credentials.client_cert, credentials.client_key),
                                    (credentials.serving_cert, credentials.serving_key)):
            cert = certificates.load_certificate(cert_path)
            if not _issued_by_any(cert, cas) or not _key_matches(cert, key_path) or \
                    cert.not_valid_after_utc - now < _MIN_VALIDITY:
                return False
        client = certificates.load_certificate(credentials.client_cert)
        names = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or names[0].value != f"system:node:{node_name}":
            return False
        serving = certificates.load_certificate(credentials.serving_cert)
        sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, OSError, x509.ExtensionNotFound) as exc:
        log.info("not reusing the node credentials in %s: %s", credentials.tls_dir,
                 exc or type(exc).__name__)
        return False
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    have_ips = set(sans.get_values_for_type(x509.IPAddress))
    return ({node_name, *hostnames} <= have_dns
            and {ipaddress.ip_address(a) for a in addresses} <= have_ips)


def _issued_by_any(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def _key_matches(cert: x509.Certificate, key_path: str) -> bool:
    """Whether the key file is the certificate's (a crash between writing the two leaves
    them apart)."""
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return key.public_key() == cert.public_key()
