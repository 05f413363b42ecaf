"""TLS for k8py's HTTPS servers (the API server, the kubelet): one way to build their
contexts, so both speak the same versions and protocols.

Both present a certificate from the cluster CA and verify client certificates against that
CA; neither requires one (bearer tokens, and the API server's anonymous health checks, come
without), so `require_client_cert` is for servers that accept certificates only.

`bound_read_buffers` caps asyncio's per-connection TLS read buffer; the servers call it
before they listen.

Renewal without a restart: OpenSSL copies a context's certificate into each connection when
the connection starts, so loading a new chain into the live context (`reload`) serves it to
every new connection while open ones finish with the old. Trust only grows in a live
context (`trust` adds CAs; OpenSSL cannot take one out), so a CA leaves a process's trust
when the process restarts. `follow` reloads a context whenever its certificate file is
replaced, whoever replaced it (the kubelet server's certificate is renewed by the server
process for the embedded agent, by the agent's own rotation when joined).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import os
import ssl

log = logging.getLogger(__name__)

# asyncio gives every TLS connection a read buffer of 256 KiB (`SSLProtocol.max_size`), kept
# for the connection's life: 2,000 open watches would hold 500 MB of empty buffers. A TLS
# record carries at most 16 KiB of data (plus a little framing), so reads of one record lose
# nothing; set once, for every TLS connection of the process (servers' and clients').
TLS_READ_BUFFER = 16 * 1024 + 512


def bound_read_buffers() -> None:
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def server_context(cert: str, key: str, client_ca: str, *,
                   require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def reload(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Present the chain in `cert` (with `key`) on every connection from now on."""
    context.load_cert_chain(cert, key)


def trust(context: ssl.SSLContext, cafile: str) -> None:
    """Also trust every CA in `cafile` (a bundle), for peers from now on."""
    context.load_verify_locations(cafile=cafile)


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


async def follow(context: ssl.SSLContext, cert: str, key: str, cafile: str | None = None,
                 interval: float = 5.0) -> None:
    """Reload `context` each time `cert` is replaced, and trust the CAs of `cafile` each
    time it is (checked every `interval` seconds); until cancelled. Files are replaced by
    rename, key first, so a new certificate file always finds its key."""
    seen = _identity(cert)
    seen_ca = _identity(cafile) if cafile else None
    while True:
        await asyncio.sleep(interval)
        if cafile and (now_ca := _identity(cafile)) not in (None, seen_ca):
            try:
                trust(context, cafile)
                seen_ca = now_ca
                log.info("trusting the CAs of %s", cafile)
            except (OSError, ssl.SSLError) as exc:
                log.warning("reading %s: %s; trying again", cafile, exc)
        now = _identity(cert)
        if now is None or now == seen:
            continue
        try:
            reload(context, cert, key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("reloading %s: %s; trying again", cert, exc)
            continue
        seen = now
        log.info("serving the renewed certificate %s", cert)
