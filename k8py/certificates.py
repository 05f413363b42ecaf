"""Certificate files and when to renew them: what the server's PKI and the agent share.

Lifetimes. A leaf certificate lives `leaf_validity()`: a year, as k3s's and upstream's
signers issue them, unless the environment says otherwise, which only tests do:
`K8PY_CERT_VALIDITY_SECONDS` (seconds), else k3s's `CATTLE_NEW_SIGNED_CERT_EXPIRATION_DAYS`
(days). CAs are not leaves: they live ten years and are replaced only by
`k8py certificate rotate-ca`.

When to renew, two rules, one for starting and one for running:
- at start (k3s): a certificate is `due` when less than the renew window is left: k3s's 90
  days (`K8PY_CERT_RENEW_DAYS`), but never more than 30% of its lifetime, so a short
  certificate is not renewed on every start;
- while running (upstream's kubelet certificate manager): at `rotation_deadline`, a point
  drawn between 70% and 90% of the lifetime (jittered, so a fleet of nodes issued together
  does not renew together), or at once when the start rule already says due.

`keep_renewed(name, path, renew)` is the loop every running renewal uses (the server's
leaves, `server/renewal.py`; the kubelet's, `agent/certrotation.py`): read the certificate,
sleep until its deadline, `renew()`, again; a failed renewal is logged and retried (the
current certificate is still good until its end).

Files. `write_private` replaces a file atomically (a unique temporary file in the same
folder, fsync, rename, fsync of the folder), mode 0600 unless told otherwise: a reader sees
the old bytes or the new, never half; a crash leaves one of them. A certificate file may
hold a chain (the leaf first); `load_certificates` reads all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import random
import tempfile
from collections.abc import Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

VALIDITY_SECONDS_ENV = "K8PY_CERT_VALIDITY_SECONDS"
VALIDITY_DAYS_ENV = "CATTLE_NEW_SIGNED_CERT_EXPIRATION_DAYS"  # k3s's knob
RENEW_DAYS_ENV = "K8PY_CERT_RENEW_DAYS"
DEFAULT_VALIDITY = datetime.timedelta(days=365)
DEFAULT_RENEW_DAYS = 90.0  # k3s's CertificateRenewDays
MAX_RENEW_FRACTION = 0.3
JITTER = (0.7, 0.9)  # upstream's jitteryDuration: 70% plus up to 20% of the lifetime
RETRY_SECONDS = (1.0, 60.0)  # a failed renewal is retried after 1 s, doubling up to 60 s

log = logging.getLogger(__name__)


def _positive(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


def leaf_validity(default: datetime.timedelta = DEFAULT_VALIDITY) -> datetime.timedelta:
    """How long a newly signed leaf certificate lives."""
    seconds = _positive(VALIDITY_SECONDS_ENV)
    if seconds is not None:
        return datetime.timedelta(seconds=seconds)
    days = _positive(VALIDITY_DAYS_ENV)
    return datetime.timedelta(days=days) if days is not None else default


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def lifetime(cert: x509.Certificate) -> datetime.timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def renew_window(cert: x509.Certificate) -> datetime.timedelta:
    """How long before its end a certificate is renewed at start."""
    days = _positive(RENEW_DAYS_ENV)
    window = datetime.timedelta(days=DEFAULT_RENEW_DAYS if days is None else days)
    return min(window, lifetime(cert) * MAX_RENEW_FRACTION)


def due(cert: x509.Certificate, at: datetime.datetime | None = None) -> bool:
    """Whether a certificate should be replaced now (the start rule)."""
    return cert.not_valid_after_utc - (at or now()) < renew_window(cert)


def rotation_deadline(cert: x509.Certificate, fraction: float | None = None
                      ) -> datetime.datetime:
    """When a running process renews `cert`: at `fraction` of its lifetime (drawn from
    JITTER when None), and no later than the start rule would."""
    if fraction is None:
        fraction = random.uniform(*JITTER)
    jittered = cert.not_valid_before_utc + lifetime(cert) * fraction
    return min(jittered, cert.not_valid_after_utc - renew_window(cert))


def seconds_until(deadline: datetime.datetime, at: datetime.datetime | None = None) -> float:
    return max(0.0, (deadline - (at or now())).total_seconds())


async def keep_renewed(name: str, path: str, renew: Callable[[], Awaitable[None]], *,
                       fraction: float | None = None) -> None:
    """Renew the certificate at `path` before it ends, forever: `renew()` writes the new
    one (and makes its users take it). `fraction` fixes the point of the lifetime (tests)."""
    retry = RETRY_SECONDS[0]
    while True:
        try:
            cert = await asyncio.to_thread(load_certificate, path)
        except (OSError, ValueError) as exc:  # removed or broken under us: wait for a good one
            log.warning("reading the %s certificate %s: %s", name, path, exc)
            await asyncio.sleep(RETRY_SECONDS[1])
            continue
        deadline = rotation_deadline(cert, fraction)
        log.info("%s certificate (serial %x) expires %s; renewal at %s", name,
                 cert.serial_number, cert.not_valid_after_utc.isoformat(timespec="seconds"),
                 deadline.isoformat(timespec="seconds"))
        await asyncio.sleep(seconds_until(deadline))
        try:
            await renew()
        except Exception as exc:  # noqa: BLE001 - the current certificate still serves
            log.warning("renewing the %s certificate failed: %s; retrying in %.0f s", name,
                        exc or type(exc).__name__, retry)
            await asyncio.sleep(retry)
            retry = min(retry * 2, RETRY_SECONDS[1])
            continue
        retry = RETRY_SECONDS[0]
        renewed = await asyncio.to_thread(load_certificate, path)
        log.info("%s certificate renewed: serial %x, expires %s", name, renewed.serial_number,
                 renewed.not_valid_after_utc.isoformat(timespec="seconds"))
        if renewed.serial_number == cert.serial_number:
            await asyncio.sleep(retry)  # renew() wrote nothing new: never spin


# --- files --------------------------------------------------------------------------------


def write_private(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically, readable by its owner only (or `mode`)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
    try:
        try:
            os.fchmod(fd, mode)  # mkstemp's 0600, then exactly `mode` whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dirfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dirfd)  # the rename itself survives a crash
    finally:
        os.close(dirfd)


def load_certificates(path: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (a chain or a bundle), in file order."""
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


def load_certificate(path: str) -> x509.Certificate:
    """The first certificate of a PEM file: the leaf of a chain, the current CA of a bundle."""
    return load_certificates(path)[0]


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
