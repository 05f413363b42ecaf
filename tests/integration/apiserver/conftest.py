"""A real API server in the test's event loop: HTTPS on a free loopback port, real
certificates from `pki`, a memory or SQLite store; and an admin HTTP client for it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import ssl

import aiohttp
import pytest

from k8py.server import pki
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver.authn import TokenFile
from k8py.server.daemon import bootstrap
from k8py.api.resources import Registry
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

    def ssl(self, client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.certs.ca_cert)
        if client_cert:
            context.load_cert_chain(self.certs.admin_cert, self.certs.admin_key)
        return context


@pytest.fixture(params=["memory", "sqlite"])
async def server(request, tmp_path):
    data_dir = str(tmp_path / "data")
    server_dir = os.path.join(data_dir, "server")
    os.makedirs(server_dir, mode=0o700)
    certs = pki.ensure_pki(server_dir, cluster_domain="cluster.local", service_ip="10.43.0.1")
    tokens = TokenFile.ensure(os.path.join(server_dir, "cred", "tokens"), "system:admin",
                              ("system:masters",))
    url = "memory://" if request.param == "memory" else ""
    store = open_backend(url, data_dir)
    await store.start()
    registry = Registry()
    await bootstrap(store, registry)
    app = apiserver.make_app(store, tokens, registry)
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(apiserver.serve(
        app, "127.0.0.1", port, apiserver.tls_context(certs.serving_cert, certs.serving_key,
                                                       certs.ca_cert), ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield Server(f"https://127.0.0.1:{port}", certs, tokens.first_token(), store, data_dir)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


class Client:
    """Minimal admin client: JSON in, (status, JSON) out."""

    def __init__(self, server: Server, session: aiohttp.ClientSession):
        self.server = server
        self.session = session

    async def request(self, method: str, path: str, body=None, *, raw: bytes | None = None,
                      content_type: str = "application/json", **params):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(method, self.server.url + path, data=data,
                                        headers=headers, params=params) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


@pytest.fixture
async def client(server):
    connector = aiohttp.TCPConnector(ssl=server.ssl())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Client(server, session)
