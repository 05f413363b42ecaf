"""The cluster's certificates, admin credentials, join token and admin kubeconfig.

On first start the server creates, under `<data-dir>/server/tls/` (folder 0700, files 0600):

- `server-ca.crt/.key`: the cluster CA (ECDSA P-256, ten years), which signs everything else
  and which clients trust. `server-ca.crt` is the trust bundle: the current CA first and,
  while a CA rotation overlaps (`certfiles.rotate_ca`), the previous one after it; the key
  is the current CA's. During the overlap `server-ca-cross.crt` holds the current CA signed
  by the previous one, and every leaf issued carries it after itself in its file (its
  chain), so a peer that still trusts only the previous CA verifies the new leaves;
- `serving.crt/.key`: the API server's certificate, for the SANs `kubernetes`,
  `kubernetes.default`, `kubernetes.default.svc`, `kubernetes.default.svc.<domain>`,
  `localhost`, the hostname, `127.0.0.1`, the node's addresses, the first service IP
  (`10.43.0.1`) and every `--tls-san`. It is re-issued when that list changes;
- `client-admin.crt/.key`: the admin's client certificate, CN `system:admin`, O
  `system:masters` (upstream's superuser group);
- `client-kube-apiserver.crt/.key`: what the API server shows kubelets.

Leaves live `certificates.leaf_validity()` (a year) and are re-issued at start when they are
`certificates.due` (k3s: within 90 days of their end), were not issued by the current CA, or
are missing; the running server renews them again before they end (`server/renewal.py`).

`<data-dir>/server/token` holds the join token `K10<sha256 of server-ca.crt>::server:<secret>`
(k3s's format: an agent can check the CA it is handed against the hash); when the bundle
changes, the hash is rewritten and the secret kept. The admin kubeconfig embeds the bundle
and the admin's certificate and is written with the mode the operator asked for.

`ensure_service_key` adds `service.key` (RSA 2048, 0600, as k3s's), the key that signs service
account tokens (`apiserver/tokens.py`); its public half is served as the issuer's JWKS.

Joining agents (`apiserver/join.py`) get `issue_node_credentials`: a kubelet client
certificate (`system:node:<name>`, `system:nodes`) and serving certificate, issued afresh
from the cluster CA on each request and kept by the agent only; `sign_node_serving` signs a
running agent's request for a new serving certificate.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import ipaddress
import os
import secrets
import socket
import time

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k8py import certificates
from k8py.certificates import key_pem, new_key, write_private

ADMIN_USER = "system:admin"
ADMIN_GROUP = "system:masters"
CA_VALIDITY = datetime.timedelta(days=3650)
CA_NAME = "k8py-server-ca"
CROSS_FILE = "server-ca-cross.crt"


@dataclasses.dataclass(frozen=True)
class PKI:
    tls_dir: str
    ca_cert: str
    ca_key: str
    serving_cert: str
    serving_key: str
    admin_cert: str
    admin_key: str
    token_file: str

    @property
    def ca_cross(self) -> str:
        """The current CA signed by the previous one, while a CA rotation overlaps."""
        return os.path.join(self.tls_dir, CROSS_FILE)


def paths(server_dir: str) -> PKI:
    tls = os.path.join(server_dir, "tls")
    return PKI(tls, os.path.join(tls, "server-ca.crt"), os.path.join(tls, "server-ca.key"),
               os.path.join(tls, "serving.crt"), os.path.join(tls, "serving.key"),
               os.path.join(tls, "client-admin.crt"), os.path.join(tls, "client-admin.key"),
               os.path.join(server_dir, "token"))


def _load(cert_path: str, key_path: str):
    cert = certificates.load_certificate(cert_path)
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return cert, key


@dataclasses.dataclass(frozen=True)
class Signer:
    """The current CA, its key, and what every leaf it signs carries after itself."""
    cert: x509.Certificate
    key: object
    chain: tuple[x509.Certificate, ...] = ()


def signer(p: PKI) -> Signer:
    cert, key = _load(p.ca_cert, p.ca_key)
    chain = tuple(certificates.load_certificates(p.ca_cross)) if os.path.exists(p.ca_cross) \
        else ()
    return Signer(cert, key, chain)


def issue(subject: x509.Name, key, issuer_cert, issuer_key, *,
          validity: datetime.timedelta, ca: bool = False,
          sans: list[x509.GeneralName] | None = None, usages: list | None = None,
          public_key=None) -> x509.Certificate:
    """A certificate for `key`'s public key (or `public_key`, a CSR's), signed by the
    issuer (self-signed when issuer_cert is None), valid for `validity` from now. It starts
    a little earlier, for peers whose clock is behind: five minutes, as upstream's signer,
    but a tenth of `validity` at most, so a short certificate is not mostly spent when
    issued."""
    now = certificates.now()
    backdate = min(datetime.timedelta(minutes=5), validity / 10)
    public = public_key if public_key is not None else key.public_key()
    signing_public = issuer_key.public_key() if issuer_key is not None else public
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_public),
                       critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def new_ca() -> tuple[x509.Certificate, object]:
    """A new cluster CA, named as k3s names its CAs (`<name>@<unix time>`) so that two CAs of
    one cluster never share a subject."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CA_NAME}@{int(time.time())}")])
    return issue(name, key, None, None, validity=CA_VALIDITY, ca=True), key


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def cross_sign(ca: x509.Certificate, issuer_cert: x509.Certificate, issuer_key
               ) -> x509.Certificate:
    """`ca` (its subject and key) signed by another CA: the link by which a peer trusting
    only `issuer_cert` verifies what `ca` signs. It ends when the first of the two does."""
    return (x509.CertificateBuilder()
            .subject_name(ca.subject)
            .issuer_name(issuer_cert.subject)
            .public_key(ca.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(ca.not_valid_before_utc)
            .not_valid_after(min(ca.not_valid_after_utc, issuer_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256()))


def _write_leaf(s: Signer, cert_path: str, key_path: str, subject: x509.Name, *,
                usages: list, sans: list[x509.GeneralName] | None = None) -> None:
    """A new key and certificate from the current CA, its chain after it; the key is written
    first so that a reader of the new certificate always finds its key."""
    key = new_key()
    cert = issue(subject, key, s.cert, s.key, validity=certificates.leaf_validity(), sans=sans,
                 usages=usages)
    write_private(key_path, key_pem(key))
    write_private(cert_path, certificates.pem(cert, *s.chain))


def serving_names(
    cluster_domain: str, service_ip: str, extra: tuple[str, ...] = ()
) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the serving certificate must cover."""
    dns = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{cluster_domain}",
        "localhost",
        socket.gethostname(),
    ]
    ips = ["127.0.0.1", "::1", service_ip]
    try:
        ips += [
            info[4][0]
            for info in socket.getaddrinfo(socket.gethostname(), None)
            if info[0] in (socket.AF_INET, socket.AF_INET6)
        ]
    except OSError:
        pass
    for name in extra:
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return sorted(set(dns)), sorted(set(ips), key=lambda a: (":" in a, a))


def _sans(dns, ips) -> list[x509.GeneralName]:
    return [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i))
                                             for i in ips]


def issue_serving(p: PKI, *, cluster_domain: str, service_ip: str,
                  tls_san: tuple[str, ...] = ()) -> None:
    """A new serving certificate (`serving.crt/.key`)."""
    dns, ips = serving_names(cluster_domain, service_ip, tls_san)
    _write_leaf(signer(p), p.serving_cert, p.serving_key,
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
                usages=[ExtendedKeyUsageOID.SERVER_AUTH], sans=_sans(dns, ips))


def issue_admin(p: PKI) -> None:
    """A new admin client certificate (`client-admin.crt/.key`)."""
    _write_leaf(signer(p), p.admin_cert, p.admin_key,
                x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                           x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER)]),
                usages=[ExtendedKeyUsageOID.CLIENT_AUTH])


def ensure_pki(
    server_dir: str, *, cluster_domain: str, service_ip: str, tls_san: tuple[str, ...] = (),
    token: str | None = None,
) -> PKI:
    """The cluster's CA, serving and admin certificates, and the join token
    `K10<CA hash>::server:<secret>`, kept under `server_dir`; `token` (the server's --token,
    a secret or a whole token) chooses the secret, as k3s's --token does."""
    p = paths(server_dir)
    os.makedirs(p.tls_dir, mode=0o700, exist_ok=True)
    os.chmod(p.tls_dir, 0o700)

    if not (os.path.exists(p.ca_cert) and os.path.exists(p.ca_key)):
        ca_cert, ca_key = new_ca()
        write_private(p.ca_key, key_pem(ca_key))
        write_private(p.ca_cert, certificates.pem(ca_cert))

    dns, ips = serving_names(cluster_domain, service_ip, tls_san)
    if not _fresh(p, p.serving_cert, p.serving_key, set(dns), set(ips)):
        issue_serving(p, cluster_domain=cluster_domain, service_ip=service_ip, tls_san=tls_san)
    if not _fresh(p, p.admin_cert, p.admin_key):
        issue_admin(p)

    update_token(p, token.rpartition("::server:")[2].strip() if token else None)
    return p


def update_token(p: PKI, chosen: str | None = None) -> None:
    """The join token with the current bundle's hash: the secret `chosen`, else the one the
    token file holds, else a new one."""
    existing = read_token(p).rpartition("::server:")[2] if os.path.exists(p.token_file) \
        else None
    whole = f"K10{ca_hash(p)}::server:{chosen or existing or secrets.token_hex(16)}"
    if existing is None or read_token(p) != whole:
        write_private(p.token_file, whole.encode() + b"\n")


def ca_hash(p: PKI) -> str:
    """The sha256 of the trust bundle, as the join token holds it."""
    return hashlib.sha256(ca_pem(p)).hexdigest()


def ensure_service_key(p: PKI) -> str:
    """The path of the service-account signing key, created (RSA 2048) if missing. RSA
    because every OIDC consumer of the issuer's JWKS takes RS256; an ECDSA P-256 key put in
    its place is used as is (ES256)."""
    path = os.path.join(p.tls_dir, "service.key")
    if not os.path.exists(path):
        write_private(path, key_pem(rsa.generate_private_key(public_exponent=65537,
                                                             key_size=2048)))
    return path


def read_token(p: PKI) -> str:
    with open(p.token_file, encoding="ascii") as f:
        return f.read().strip()


def write_kubeconfig(p: PKI, path: str, server_url: str, mode: int) -> None:
    """The admin kubeconfig, credentials embedded (the trust bundle as its CA), written
    atomically with `mode`."""

    def b64(file: str) -> str:
        with open(file, "rb") as f:
            return base64.b64encode(f.read()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "default",
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": b64(p.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": "default",
                "user": {
                    "client-certificate-data": b64(p.admin_cert),
                    "client-key-data": b64(p.admin_key),
                },
            }
        ],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
        "preferences": {},
    }
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    write_private(path, yaml.safe_dump(config, sort_keys=False).encode(), mode)


# --- the kubelet's certificates ----------------------------------------------------------------

KUBELET_CLIENT = "client-kube-apiserver"  # the API server's client certificate for kubelets
KUBELET_SERVING = "serving-kubelet"
NODES_GROUP = "system:nodes"


def kubelet_client_paths(p: PKI) -> tuple[str, str]:
    """(cert, key) the API server presents to kubelets (logs, exec, port-forward proxy):
    `<data-dir>/server/tls/client-kube-apiserver.{crt,key}`."""
    return (os.path.join(p.tls_dir, f"{KUBELET_CLIENT}.crt"),
            os.path.join(p.tls_dir, f"{KUBELET_CLIENT}.key"))


def issue_kubelet_client(p: PKI) -> None:
    """A new kubelet client certificate for the API server (CN `kube-apiserver`, O
    `system:masters`, client auth)."""
    cert_path, key_path = kubelet_client_paths(p)
    _write_leaf(signer(p), cert_path, key_path,
                x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                           x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
                usages=[ExtendedKeyUsageOID.CLIENT_AUTH])


def ensure_kubelet_client(p: PKI) -> tuple[str, str]:
    """The API server's kubelet client certificate, issued if missing or due; (cert, key)."""
    cert_path, key_path = kubelet_client_paths(p)
    if not _fresh(p, cert_path, key_path):
        issue_kubelet_client(p)
    return cert_path, key_path


def node_name(node: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODES_GROUP),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}")])


def _kubelet_serving_names(node: str, addresses: tuple[str, ...]) -> tuple[set, set]:
    dns = {node, socket.gethostname(), "localhost"}
    ips = {"127.0.0.1"}
    for address in addresses:
        try:
            ips.add(str(ipaddress.ip_address(address)))
        except ValueError:
            dns.add(address)
    return dns, ips


def kubelet_serving_paths(agent_dir: str) -> tuple[str, str]:
    tls = os.path.join(agent_dir, "tls")
    return (os.path.join(tls, f"{KUBELET_SERVING}.crt"),
            os.path.join(tls, f"{KUBELET_SERVING}.key"))


def issue_kubelet_serving(p: PKI, agent_dir: str, node: str,
                          addresses: tuple[str, ...] = ()) -> None:
    """A new serving certificate for the embedded agent's kubelet."""
    cert_path, key_path = kubelet_serving_paths(agent_dir)
    dns, ips = _kubelet_serving_names(node, addresses)
    _write_leaf(signer(p), cert_path, key_path, node_name(node),
                usages=[ExtendedKeyUsageOID.SERVER_AUTH],
                sans=_sans(sorted(dns), sorted(ips)))


def ensure_kubelet_serving(p: PKI, agent_dir: str, node: str,
                           addresses: tuple[str, ...] = ()) -> tuple[str, str]:
    """The kubelet's serving certificate for this node (CN `system:node:<node>`, SANs the
    node name, the hostname, `localhost`, 127.0.0.1 and the node's addresses), under
    `<data-dir>/agent/tls/serving-kubelet.{crt,key}`, re-issued when a name is missing or it
    is due; (cert, key) paths."""
    tls = os.path.join(agent_dir, "tls")
    os.makedirs(tls, mode=0o700, exist_ok=True)
    os.chmod(tls, 0o700)
    cert_path, key_path = kubelet_serving_paths(agent_dir)
    if not _fresh(p, cert_path, key_path, *_kubelet_serving_names(node, addresses)):
        issue_kubelet_serving(p, agent_dir, node, addresses)
    return cert_path, key_path


def _fresh(p: PKI, cert_path: str, key_path: str, dns: set[str] | None = None,
           ips: set[str] | None = None) -> bool:
    """Whether the certificate exists, was issued by the current CA, covers the names and
    is not due."""
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        return False
    try:
        cert = certificates.load_certificate(cert_path)
        cert.verify_directly_issued_by(certificates.load_certificate(p.ca_cert))
        with open(key_path, "rb") as f:  # a crash between the two writes parts them
            if serialization.load_pem_private_key(f.read(), None).public_key() != \
                    cert.public_key():
                return False
    except (ValueError, TypeError, InvalidSignature):
        return False
    if certificates.due(cert):
        return False
    if dns is None and ips is None:
        return True
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    have_ips = {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    return (dns or set()) <= have_dns and (ips or set()) <= have_ips


# --- joining agents (`apiserver/join.py`) ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NodeCredentials:
    """PEMs a joining agent receives: its kubelet's client and serving certificates and the CA."""
    client_cert: bytes
    client_key: bytes
    serving_cert: bytes
    serving_key: bytes
    ca_cert: bytes


def ca_pem(p: PKI) -> bytes:
    """The trust bundle as served at /cacerts: the bytes whose sha256 the join token holds."""
    with open(p.ca_cert, "rb") as f:
        return f.read()


def join_secret(p: PKI) -> str:
    """The `<secret>` of the join token `K10<hash>::server:<secret>`."""
    _, sep, secret = read_token(p).partition("::server:")
    if not sep or not secret:
        raise ValueError(f"{p.token_file} is not a join token K10<hash>::server:<secret>")
    return secret


def _node_serving_sans(node: str, addresses, hostnames) -> list[x509.GeneralName]:
    dns = sorted({node, "localhost", *hostnames})
    ips = sorted({ipaddress.ip_address("127.0.0.1"), *map(ipaddress.ip_address, addresses)},
                 key=lambda a: (a.version, a))
    return [x509.DNSName(d) for d in dns] + [x509.IPAddress(i) for i in ips]


def issue_node_credentials(p: PKI, node: str, addresses: tuple[str, ...] = (),
                           hostnames: tuple[str, ...] = ()) -> NodeCredentials:
    """A kubelet client certificate (CN `system:node:<node>`, O `system:nodes`, client auth)
    and a kubelet serving certificate (the node name, `hostnames`, `localhost`, 127.0.0.1 and
    `addresses`; server auth), each with a new ECDSA key. Issued afresh on every call:
    nothing is kept on the server (the agent keeps them)."""
    s = signer(p)
    validity = certificates.leaf_validity()
    client_key = new_key()
    client = issue(node_name(node), client_key, s.cert, s.key, validity=validity,
                   usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    serving_key = new_key()
    serving = issue(node_name(node), serving_key, s.cert, s.key, validity=validity,
                    sans=_node_serving_sans(node, addresses, hostnames),
                    usages=[ExtendedKeyUsageOID.SERVER_AUTH])
    return NodeCredentials(certificates.pem(client, *s.chain), key_pem(client_key),
                           certificates.pem(serving, *s.chain), key_pem(serving_key),
                           ca_pem(p))


def sign_node_serving(p: PKI, node: str, public_key, addresses: tuple[str, ...],
                      hostnames: tuple[str, ...]) -> bytes:
    """A running agent's new kubelet serving certificate (its chain, PEM) for its own key,
    with the names `issue_node_credentials` gives."""
    s = signer(p)
    cert = issue(node_name(node), None, s.cert, s.key, validity=certificates.leaf_validity(),
                 sans=_node_serving_sans(node, addresses, hostnames),
                 usages=[ExtendedKeyUsageOID.SERVER_AUTH], public_key=public_key)
    return certificates.pem(cert, *s.chain)


def sign_request(ca_cert_path: str, ca_key_path: str, request: x509.CertificateSigningRequest,
                 *, server: bool, seconds: float) -> bytes:
    """A certificate (PEM, its chain after it) for a CSR's subject, public key and subject
    alternative names, signed by the cluster CA, for a client (`server` False) or a server,
    valid `seconds`."""
    ca_cert, ca_key = _load(ca_cert_path, ca_key_path)
    cross = os.path.join(os.path.dirname(ca_cert_path), CROSS_FILE)
    chain = certificates.load_certificates(cross) if os.path.exists(cross) else []
    try:
        sans = list(request.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = None
    cert = issue(request.subject, None, ca_cert, ca_key,
                 validity=datetime.timedelta(seconds=seconds), sans=sans,
                 public_key=request.public_key(),
                 usages=[ExtendedKeyUsageOID.SERVER_AUTH if server
                         else ExtendedKeyUsageOID.CLIENT_AUTH])
    return certificates.pem(cert, *chain)
