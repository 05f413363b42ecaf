"""The certificate files of a data directory, by service, and what `k8py certificate` does
with them (k3s's `certificate check|rotate|rotate-ca`).

Services and their files (a file may hold a chain: every certificate in it is listed):

| service | files |
| --- | --- |
| `ca` | `server/tls/server-ca.crt` (the trust bundle), `server-ca-cross.crt` (during a CA rotation) |
| `admin` | `server/tls/client-admin.crt` |
| `api-server` | `server/tls/serving.crt`, `server/tls/client-kube-apiserver.crt` |
| `kubelet` | `agent/tls/client-kubelet.crt`, `agent/tls/serving-kubelet.crt`, `agent/tls/server-ca.crt` |

`check` reads them; `status` is k3s's: OK, WARNING (within the renew window,
`certificates.renew_window`), EXPIRED, NOT YET VALID.

`rotate` and the CA steps change files, so k8py must be stopped (the commands refuse to run
beside a k8py of the same data directory, `k8py/cli.py`). As k3s's, `rotate` backs the TLS
folder up (`server/tls-<unix time>/`, or `agent/tls-<unix time>/` on an agent) and removes
the chosen leaves; the next start issues new ones (a joined agent asks the server again with
its token).

CA rotation in two steps, the overlap between them:
1. `rotate_ca`: a new CA; `server-ca.crt` becomes new + old, `server-ca-cross.crt` the new CA
   signed by the old one; the server's leaves are removed so the next start issues them from
   the new CA, each followed by the cross-signed CA. Peers holding only the old CA (agents,
   copies of the kubeconfig) still verify the server, and the server trusts certificates of
   either CA; agents fetch the new bundle (`agent/certrotation.py`) and renew their
   certificates from the new CA as they come due (or at once, on restart after `rotate`).
2. `finish_ca_rotation`, once every agent holds the new bundle and new certificates: the
   bundle is the new CA alone, the cross-signed CA goes, the server's leaves are issued
   again without it. What still carries the old CA stops working.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import time

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k8py import certificates
from k8py.certificates import key_pem, write_private
from k8py.server import pki

SERVICES = ("ca", "admin", "api-server", "kubelet")
ROTATABLE = ("admin", "api-server", "kubelet")


class CertificateError(Exception):
    """A certificate command cannot do what was asked: one line for the operator."""


def files(data_dir: str, services: tuple[str, ...] = SERVICES) -> list[tuple[str, str]]:
    """(service, certificate file) of the services, the files that exist."""
    server_tls = os.path.join(data_dir, "server", "tls")
    agent_tls = os.path.join(data_dir, "agent", "tls")
    by_service = {
        "ca": [os.path.join(server_tls, "server-ca.crt"),
               os.path.join(server_tls, pki.CROSS_FILE)],
        "admin": [os.path.join(server_tls, "client-admin.crt")],
        "api-server": [os.path.join(server_tls, "serving.crt"),
                       os.path.join(server_tls, f"{pki.KUBELET_CLIENT}.crt")],
        "kubelet": [os.path.join(agent_tls, "client-kubelet.crt"),
                    os.path.join(agent_tls, f"{pki.KUBELET_SERVING}.crt"),
                    os.path.join(agent_tls, "server-ca.crt")],
    }
    return [(service, path) for service in services for path in by_service[service]
            if os.path.exists(path)]


@dataclasses.dataclass(frozen=True)
class Certificate:
    """One certificate of a file, as `k8py certificate check` reports it (k3s's fields)."""
    path: str
    subject: str
    issuer: str
    usages: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    status: str

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)


def _common_name(name: x509.Name) -> str:
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def usages(cert: x509.Certificate) -> tuple[str, ...]:
    """k3s's names: CertSign, ServerAuth, ClientAuth (or Unknown)."""
    found = []
    try:
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            found.append("CertSign")
    except x509.ExtensionNotFound:
        pass
    try:
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        extended = []
    for usage in extended:
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            found.append("ServerAuth")
        elif usage == ExtendedKeyUsageOID.CLIENT_AUTH:
            found.append("ClientAuth")
    return tuple(found) or ("Unknown",)


def status(cert: x509.Certificate, at: datetime.datetime) -> str:
    if at < cert.not_valid_before_utc:
        return "NOT YET VALID"
    if at > cert.not_valid_after_utc:
        return "EXPIRED"
    if not pki.is_ca(cert) and certificates.due(cert, at):
        return "WARNING"
    if pki.is_ca(cert) and cert.not_valid_after_utc - at < datetime.timedelta(
            days=certificates.DEFAULT_RENEW_DAYS):
        return "WARNING"
    return "OK"


def check(data_dir: str, services: tuple[str, ...] = SERVICES,
          at: datetime.datetime | None = None) -> list[Certificate]:
    at = at or certificates.now()
    found = []
    for _, path in files(data_dir, services):
        try:
            certs = certificates.load_certificates(path)
        except (OSError, ValueError):
            continue
        for cert in certs:
            found.append(Certificate(path, _common_name(cert.subject),
                                     _common_name(cert.issuer), usages(cert),
                                     cert.not_valid_before_utc, cert.not_valid_after_utc,
                                     status(cert, at)))
    return found


def _backup(folder: str) -> str:
    """A copy of `folder` beside it, `<name>-<unix time>`, as k3s backs up before rotating."""
    target = f"{folder}-{int(time.time())}"
    while os.path.exists(target):
        target += "-1"
    shutil.copytree(folder, target)
    os.chmod(target, 0o700)
    return target


def _leaves(data_dir: str, services: tuple[str, ...]) -> list[str]:
    """The leaf certificate and key files of the services."""
    found = []
    for service, path in files(data_dir, services):
        if service == "ca" or path.endswith("server-ca.crt"):
            continue
        found += [path, path[:-len(".crt")] + ".key"]
    return found


def rotate(data_dir: str, services: tuple[str, ...] = ROTATABLE) -> list[str]:
    """Back up, then remove the services' leaves; the backups' paths."""
    if not set(services) <= set(ROTATABLE):
        raise CertificateError(f"unknown service; one of {', '.join(ROTATABLE)}")
    backups = []
    for folder in (os.path.join(data_dir, "server", "tls"), os.path.join(data_dir, "agent", "tls")):
        if os.path.isdir(folder) and any(p.startswith(folder + os.sep)
                                         for p in _leaves(data_dir, services)):
            backups.append(_backup(folder))
    for path in _leaves(data_dir, services):
        if os.path.exists(path):
            os.remove(path)
    return backups


def _server_pki(data_dir: str) -> pki.PKI:
    p = pki.paths(os.path.join(data_dir, "server"))
    if not (os.path.exists(p.ca_cert) and os.path.exists(p.ca_key)):
        raise CertificateError(f"no cluster CA in {p.tls_dir}: rotate-ca runs on a server")
    return p


def rotate_ca(data_dir: str) -> str:
    """Step 1: a new CA beside the old one (see the module docstring); the backup's path."""
    p = _server_pki(data_dir)
    bundle = certificates.load_certificates(p.ca_cert)
    if len(bundle) > 1 or os.path.exists(p.ca_cross):
        raise CertificateError("a CA rotation is already under way: finish it first "
                               "(k8py certificate rotate-ca --finish)")
    backup = _backup(p.tls_dir)
    old_cert, old_key = bundle[0], pki.signer(p).key
    new_cert, new_key = pki.new_ca()
    cross = pki.cross_sign(new_cert, old_cert, old_key)
    write_private(p.ca_cross, certificates.pem(cross))
    write_private(p.ca_key, key_pem(new_key))
    write_private(p.ca_cert, certificates.pem(new_cert, old_cert))
    _remove_server_leaves(data_dir)
    pki.update_token(p)
    return backup


def finish_ca_rotation(data_dir: str) -> str:
    """Step 2: the old CA leaves the bundle; the backup's path."""
    p = _server_pki(data_dir)
    bundle = certificates.load_certificates(p.ca_cert)
    if len(bundle) == 1 and not os.path.exists(p.ca_cross):
        raise CertificateError("no CA rotation is under way (k8py certificate rotate-ca)")
    backup = _backup(p.tls_dir)
    write_private(p.ca_cert, certificates.pem(bundle[0]))
    if os.path.exists(p.ca_cross):
        os.remove(p.ca_cross)
    _remove_server_leaves(data_dir)
    pki.update_token(p)
    return backup


def _remove_server_leaves(data_dir: str) -> None:
    """The leaves the server issues itself, re-issued from the current CA at its start: its
    own and, on a server with the embedded agent (no kubelet client certificate: it runs
    in process), that kubelet's serving certificate."""
    paths = _leaves(data_dir, ("admin", "api-server"))
    agent_tls = os.path.join(data_dir, "agent", "tls")
    if not os.path.exists(os.path.join(agent_tls, "client-kubelet.crt")):
        paths += [os.path.join(agent_tls, f"{pki.KUBELET_SERVING}.{ext}")
                  for ext in ("crt", "key")]
    for path in paths:
        if os.path.exists(path):
            os.remove(path)
