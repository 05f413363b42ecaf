"""A real API server in the test's event loop: HTTPS on a free loopback port, real
certificates from `pki`, a memory or SQLite store. `running_apiserver` is what the API
server tests, the join tests and the control-plane fixture all start from."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from k8py.api.resources import Registry
from k8py.server import pki
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver.authn import TokenFile
from k8py.server.daemon import bootstrap
from k8py.server.store import open_backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Server:
    url: str
    certs: pki.PKI
    token: str
    store: object
    data_dir: str
    app: web.Application | None = None

    def ssl(self, client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.certs.ca_cert)
        if client_cert:
            context.load_cert_chain(self.certs.admin_cert, self.certs.admin_key)
        return context


@contextlib.asynccontextmanager
async def running_apiserver(tmp_path, store_url: str = "memory://", *, join: bool = False,
                            customize: Callable[[web.Application], None] | None = None,
                            auditor: apiserver.audit.Auditor | None = None
                            ) -> AsyncIterator[Server]:
    """An API server under `tmp_path/data` (`store_url` "" is the default SQLite store).
    `join` serves the node-join endpoints; `customize` may add routes before it starts;
    `auditor` audits its requests (`apiserver.audit`)."""
    data_dir = str(tmp_path / "data")
    server_dir = os.path.join(data_dir, "server")
    os.makedirs(server_dir, mode=0o700, exist_ok=True)
    certs = pki.ensure_pki(server_dir, cluster_domain="cluster.local", service_ip="10.43.0.1")
    tokens = TokenFile.ensure(os.path.join(server_dir, "cred", "tokens"), "system:admin",
                              ("system:masters",))
    store = open_backend(store_url, data_dir)
    await store.start()
    registry = Registry()
    await bootstrap(store, registry)
    app = apiserver.make_app(store, tokens, registry, join_pki=certs if join else None,
                             auditor=auditor)
    if customize is not None:
        customize(app)
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(apiserver.serve(
        app, "127.0.0.1", port, apiserver.tls_context(certs.serving_cert, certs.serving_key,
                                                       certs.ca_cert), ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield Server(f"https://127.0.0.1:{port}", certs, tokens.first_token(), store, data_dir,
                     app)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
