"""TLS for k8py's HTTPS servers (the API server, the kubelet): one way to build their
contexts, so both speak the same versions and protocols.

Both present a certificate from the cluster CA and verify client certificates against that
CA; neither requires one (bearer tokens, and the API server's anonymous health checks, come
without), so `require_client_cert` is for servers that accept certificates only.

`bound_read_buffers` caps asyncio's per-connection TLS read buffer; the servers call it
before they listen.
"""

from __future__ import annotations

import asyncio.sslproto
import ssl

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
