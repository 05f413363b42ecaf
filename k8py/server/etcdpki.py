"""The embedded etcd's certificates, kept as k3s keeps them under `<data-dir>/server/tls/etcd/`
(folder 0700, every file 0600):

- `server-ca.crt/.key`: the CA of etcd's client-facing side: it signs `server-client.crt`
  (what etcd presents on its client URLs) and `client.crt` (what the API server, the
  membership calls and `k8py etcd member` present to etcd);
- `peer-ca.crt/.key`: the CA of the member-to-member side: it signs
  `peer-server-client.crt`, presented by a member to its peers both as a server and as a
  client.

The two CAs are created by the first server (`--cluster-init`) and are part of the bootstrap
data a joining server downloads (`serverjoin`); every server then issues its own leaves from
them. A leaf is re-issued at start when it is missing, due, not from the current CA, or does
not name this server's addresses (`pki._fresh`'s rules).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k8py import certificates
from k8py.certificates import key_pem, write_private
from k8py.server import pki

CA_FILES = ("server-ca.crt", "server-ca.key", "peer-ca.crt", "peer-ca.key")


@dataclasses.dataclass(frozen=True)
class EtcdPKI:
    tls_dir: str  # <data-dir>/server/tls/etcd

    def path(self, name: str) -> str:
        return os.path.join(self.tls_dir, name)

    @property
    def server_ca(self) -> str:
        return self.path("server-ca.crt")

    @property
    def peer_ca(self) -> str:
        return self.path("peer-ca.crt")

    @property
    def server_cert(self) -> tuple[str, str]:
        return self.path("server-client.crt"), self.path("server-client.key")

    @property
    def peer_cert(self) -> tuple[str, str]:
        return self.path("peer-server-client.crt"), self.path("peer-server-client.key")

    @property
    def client_cert(self) -> tuple[str, str]:
        return self.path("client.crt"), self.path("client.key")


def paths(data_dir: str) -> EtcdPKI:
    return EtcdPKI(os.path.join(data_dir, "server", "tls", "etcd"))


def has_cas(p: EtcdPKI) -> bool:
    return all(os.path.exists(p.path(name)) for name in CA_FILES)


def _ensure_ca(p: EtcdPKI, name: str, common_name: str) -> pki.PKI:
    """The CA `<name>.crt/.key` (created if missing), as a `pki.PKI` whose CA is it, so that
    pki's issuing and freshness rules apply unchanged."""
    cert_path, key_path = p.path(f"{name}.crt"), p.path(f"{name}.key")
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        key = certificates.new_key()
        cert = pki.issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
                         key, None, None, validity=pki.CA_VALIDITY, ca=True)
        write_private(key_path, key_pem(key))
        write_private(cert_path, certificates.pem(cert))
    return pki.PKI(p.tls_dir, cert_path, key_path, "", "", "", "", "")


def _names(addresses: tuple[str, ...]) -> tuple[list[str], list[str]]:
    dns = sorted({"localhost", socket.gethostname()})
    ips = sorted({"127.0.0.1", *addresses})
    return dns, ips


def _leaf(ca: pki.PKI, cert_key: tuple[str, str], common_name: str, usages: list,
          names: tuple[list[str], list[str]] | None) -> None:
    cert_path, key_path = cert_key
    dns, ips = names if names else (None, None)
    if pki._fresh(ca, cert_path, key_path, set(dns) if dns else None,
                  set(ips) if ips else None):
        return
    key = certificates.new_key()
    s = pki.signer(ca)
    cert = pki.issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key,
                     s.cert, s.key, validity=certificates.leaf_validity(),
                     sans=pki._sans(dns, ips) if names else None, usages=usages)
    write_private(key_path, key_pem(key))
    write_private(cert_path, certificates.pem(cert))


def ensure(data_dir: str, node_name: str, addresses: tuple[str, ...]) -> EtcdPKI:
    """The etcd CAs (created if missing: only a first server's are) and this server's
    leaves, for its node name and addresses."""
    p = paths(data_dir)
    os.makedirs(p.tls_dir, mode=0o700, exist_ok=True)
    os.chmod(p.tls_dir, 0o700)
    server_ca = _ensure_ca(p, "server-ca", f"etcd-server-ca@{int(time.time())}")
    peer_ca = _ensure_ca(p, "peer-ca", f"etcd-peer-ca@{int(time.time())}")
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    names = _names(addresses)
    _leaf(server_ca, p.server_cert, "etcd-server", both, names)
    _leaf(peer_ca, p.peer_cert, "etcd-peer", both, names)
    _leaf(server_ca, p.client_cert, "etcd-client", [ExtendedKeyUsageOID.CLIENT_AUTH], None)
    return p
