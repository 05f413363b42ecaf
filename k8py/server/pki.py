"""The cluster's certificates, admin credentials, join token and admin kubeconfig.

On first start the server creates, under `<data-dir>/server/tls/` (folder 0700, files 0600):

- `server-ca.crt/.key`: the cluster CA (ECDSA P-256, ten years), which signs everything else
  and which clients trust;
- `serving.crt/.key`: the API server's certificate, for the SANs `kubernetes`,
  `kubernetes.default`, `kubernetes.default.svc`, `kubernetes.default.svc.<domain>`,
  `localhost`, the hostname, `127.0.0.1`, the node's addresses, the first service IP
  (`10.43.0.1`) and every `--tls-san`. It is re-issued when that list changes;
- `client-admin.crt/.key`: the admin's client certificate, CN `system:admin`, O
  `system:masters` (upstream's superuser group).

`<data-dir>/server/token` holds the join token `K10<sha256 of the CA>::server:<secret>` (k3s's
format: an agent can check the CA it is handed against the hash). The admin kubeconfig embeds
the CA and the admin's certificate and is written with the mode the operator asked for.

`ensure_service_key` adds `service.key` (RSA 2048, 0600, as k3s's), the key that signs service
account tokens (`apiserver/tokens.py`); its public half is served as the issuer's JWKS.

Existing files are reused, so restarting the server keeps every credential valid.

Joining agents (`apiserver/join.py`) get `issue_node_credentials`: a kubelet client
certificate (`system:node:<name>`, `system:nodes`) and serving certificate, issued afresh
from the cluster CA on each request and kept by the agent only.
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

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ADMIN_USER = "system:admin"
ADMIN_GROUP = "system:masters"


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


def _write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write a file that only its owner may read, atomically."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # os.open's mode is filtered by the umask
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load(cert_path: str, key_path: str):
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return cert, key


def _issue(
    subject: x509.Name,
    key,
    issuer_cert,
    issuer_key,
    *,
    days: float,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usages: list | None = None,
    public_key=None,
) -> x509.Certificate:
    """A certificate for `key`'s public key (or `public_key`, a CSR's), signed by the
    issuer (self-signed when issuer_cert is None)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(public_key if public_key is not None else key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
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


def ensure_pki(
    server_dir: str, *, cluster_domain: str, service_ip: str, tls_san: tuple[str, ...] = (),
    token: str | None = None,
) -> PKI:
    """The cluster's CA, serving and admin certificates, and the join token
    `K10<CA hash>::server:<secret>`, kept under `server_dir`; `token` (the server's --token,
    a secret or a whole token) chooses the secret, as k3s's --token does."""
    tls = os.path.join(server_dir, "tls")
    os.makedirs(tls, mode=0o700, exist_ok=True)
    os.chmod(tls, 0o700)
    p = PKI(
        tls,
        os.path.join(tls, "server-ca.crt"),
        os.path.join(tls, "server-ca.key"),
        os.path.join(tls, "serving.crt"),
        os.path.join(tls, "serving.key"),
        os.path.join(tls, "client-admin.crt"),
        os.path.join(tls, "client-admin.key"),
        os.path.join(server_dir, "token"),
    )

    if os.path.exists(p.ca_cert) and os.path.exists(p.ca_key):
        ca_cert, ca_key = _load(p.ca_cert, p.ca_key)
    else:
        ca_key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k8py-server-ca")])
        ca_cert = _issue(name, ca_key, None, None, days=3650, ca=True)
        _write_private(p.ca_key, _key_pem(ca_key))
        _write_private(p.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))

    dns, ips = serving_names(cluster_domain, service_ip, tls_san)
    wanted = [x509.DNSName(d) for d in dns] + [
        x509.IPAddress(ipaddress.ip_address(i)) for i in ips
    ]
    if not _fresh(p.serving_cert, p.serving_key, set(dns), set(ips)):
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
        cert = _issue(
            name, key, ca_cert, ca_key, days=365, sans=wanted,
            usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        )
        _write_private(p.serving_key, _key_pem(key))
        _write_private(p.serving_cert, cert.public_bytes(serialization.Encoding.PEM))

    if not (os.path.exists(p.admin_cert) and os.path.exists(p.admin_key)):
        key = _new_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
            ]
        )
        cert = _issue(
            name, key, ca_cert, ca_key, days=365, usages=[ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        _write_private(p.admin_key, _key_pem(key))
        _write_private(p.admin_cert, cert.public_bytes(serialization.Encoding.PEM))

    ca_hash = hashlib.sha256(ca_cert.public_bytes(serialization.Encoding.PEM)).hexdigest()
    chosen = token.rpartition("::server:")[2].strip() if token else None
    if chosen or not os.path.exists(p.token_file):
        whole = f"K10{ca_hash}::server:{chosen or secrets.token_hex(16)}"
        if not os.path.exists(p.token_file) or read_token(p) != whole:
            _write_private(p.token_file, whole.encode() + b"\n")
    return p


def ensure_service_key(p: PKI) -> str:
    """The path of the service-account signing key, created (RSA 2048) if missing. RSA
    because every OIDC consumer of the issuer's JWKS takes RS256; an ECDSA P-256 key put in
    its place is used as is (ES256)."""
    path = os.path.join(p.tls_dir, "service.key")
    if not os.path.exists(path):
        _write_private(path, _key_pem(rsa.generate_private_key(public_exponent=65537,
                                                               key_size=2048)))
    return path


def read_token(p: PKI) -> str:
    with open(p.token_file, encoding="ascii") as f:
        return f.read().strip()


def write_kubeconfig(p: PKI, path: str, server_url: str, mode: int) -> None:
    """The admin kubeconfig, credentials embedded, written with `mode`."""

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
    _write_private(path, yaml.safe_dump(config, sort_keys=False).encode(), mode)


# --- the kubelet's certificates ----------------------------------------------------------------

KUBELET_CLIENT = "client-kube-apiserver"  # the API server's client certificate for kubelets
KUBELET_SERVING = "serving-kubelet"


def kubelet_client_paths(p: PKI) -> tuple[str, str]:
    """(cert, key) the API server presents to kubelets (logs, exec, port-forward proxy):
    `<data-dir>/server/tls/client-kube-apiserver.{crt,key}`."""
    return (os.path.join(p.tls_dir, f"{KUBELET_CLIENT}.crt"),
            os.path.join(p.tls_dir, f"{KUBELET_CLIENT}.key"))


def ensure_kubelet_client(p: PKI) -> tuple[str, str]:
    """The API server's kubelet client certificate (CN `kube-apiserver`, O `system:masters`,
    client auth), issued from the cluster CA if missing or expiring; (cert, key) paths."""
    cert_path, key_path = kubelet_client_paths(p)
    if _fresh(cert_path, key_path):
        return cert_path, key_path
    ca_cert, ca_key = _load(p.ca_cert, p.ca_key)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                      x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    cert = _issue(name, key, ca_cert, ca_key, days=365,
                  usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def ensure_kubelet_serving(p: PKI, agent_dir: str, node_name: str,
                           addresses: tuple[str, ...] = ()) -> tuple[str, str]:
    """The kubelet's serving certificate for this node (CN `system:node:<node>`, SANs the
    node name, the hostname, `localhost`, 127.0.0.1 and the node's addresses), under
    `<data-dir>/agent/tls/serving-kubelet.{crt,key}`, re-issued when a name is missing or it
    expires within 30 days; (cert, key) paths."""
    tls = os.path.join(agent_dir, "tls")
    os.makedirs(tls, mode=0o700, exist_ok=True)
    os.chmod(tls, 0o700)
    cert_path = os.path.join(tls, f"{KUBELET_SERVING}.crt")
    key_path = os.path.join(tls, f"{KUBELET_SERVING}.key")
    dns = {node_name, socket.gethostname(), "localhost"}
    ips = {"127.0.0.1"}
    for address in addresses:
        try:
            ips.add(str(ipaddress.ip_address(address)))
        except ValueError:
            dns.add(address)
    if _fresh(cert_path, key_path, dns, ips):
        return cert_path, key_path
    ca_cert, ca_key = _load(p.ca_cert, p.ca_key)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}")])
    sans = [x509.DNSName(d) for d in sorted(dns)] + [
        x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]
    cert = _issue(name, key, ca_cert, ca_key, days=365, sans=sans,
                  usages=[ExtendedKeyUsageOID.SERVER_AUTH])
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _fresh(cert_path: str, key_path: str, dns: set[str] | None = None,
           ips: set[str] | None = None) -> bool:
    """Whether the certificate exists, covers the names and lasts 30 more days."""
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        return False
    cert, _ = _load(cert_path, key_path)
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    if left < datetime.timedelta(days=30):
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
    """The cluster CA as served at /cacerts: the bytes whose sha256 the join token holds."""
    with open(p.ca_cert, "rb") as f:
        return f.read()


def join_secret(p: PKI) -> str:
    """The `<secret>` of the join token `K10<hash>::server:<secret>`."""
    _, sep, secret = read_token(p).partition("::server:")
    if not sep or not secret:
        raise ValueError(f"{p.token_file} is not a join token K10<hash>::server:<secret>")
    return secret


def issue_node_credentials(p: PKI, node_name: str, addresses: tuple[str, ...] = (),
                           hostnames: tuple[str, ...] = ()) -> NodeCredentials:
    """A kubelet client certificate (CN `system:node:<node>`, O `system:nodes`, client auth)
    and a kubelet serving certificate (the node name, `hostnames`, `localhost`, 127.0.0.1 and
    `addresses`; server auth), each with a new ECDSA key, for one year. Issued afresh on
    every call: nothing is kept on the server (the agent keeps them)."""
    ca_cert, ca_key = _load(p.ca_cert, p.ca_key)
    identity = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}")])
    client_key = _new_key()
    client = _issue(identity, client_key, ca_cert, ca_key, days=365,
                    usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    dns = sorted({node_name, "localhost", *hostnames})
    ips = sorted({ipaddress.ip_address("127.0.0.1"), *map(ipaddress.ip_address, addresses)},
                 key=lambda a: (a.version, a))
    serving_key = _new_key()
    serving = _issue(identity, serving_key, ca_cert, ca_key, days=365,
                     sans=[x509.DNSName(d) for d in dns] + [x509.IPAddress(i) for i in ips],
                     usages=[ExtendedKeyUsageOID.SERVER_AUTH])
    pem = serialization.Encoding.PEM
    return NodeCredentials(client.public_bytes(pem), _key_pem(client_key),
                           serving.public_bytes(pem), _key_pem(serving_key), ca_pem(p))


def sign_request(ca_cert_path: str, ca_key_path: str, request: x509.CertificateSigningRequest,
                 *, server: bool, seconds: float) -> bytes:
    """A certificate (PEM) for a CSR's subject, public key and subject alternative names,
    signed by the cluster CA, for a client (`server` False) or a server, valid `seconds`."""
    ca_cert, ca_key = _load(ca_cert_path, ca_key_path)
    try:
        sans = list(request.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = None
    cert = _issue(request.subject, None, ca_cert, ca_key, days=seconds / 86400, sans=sans,
                  public_key=request.public_key(),
                  usages=[ExtendedKeyUsageOID.SERVER_AUTH if server
                          else ExtendedKeyUsageOID.CLIENT_AUTH])
    return cert.public_bytes(serialization.Encoding.PEM)
