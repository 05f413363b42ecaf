"""A real API server in the test's event loop: HTTPS on a free loopback port, real
certificates from `pki`, a memory, SQLite or etcd store. `running_apiserver` is what the API
server tests, the join tests and the control-plane fixture all start from."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from k8py.api.resources import Registry, builtin
from k8py.client.client import Client
from k8py.server import pki
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver.authn import TokenFile
from k8py.server.apiserver.inprocess import InProcessTransport
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
    #: bearer tokens of the extra users asked for (`users`), by user name
    user_tokens: dict[str, str] = dataclasses.field(default_factory=dict)

    def ssl(self, client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.certs.ca_cert)
        if client_cert:
            context.load_cert_chain(self.certs.admin_cert, self.certs.admin_key)
        return context


@contextlib.asynccontextmanager
async def running_apiserver(tmp_path, store_url: str = "memory://", *, join: bool = False,
                            customize: Callable[[web.Application], None] | None = None,
                            disable_admission_plugins: tuple[str, ...] = ("ServiceAccount",),
                            encryption=None, users: tuple[str, ...] = (),
                            auditor: apiserver.audit.Auditor | None = None,
                            store_tls: dict[str, str] | None = None, **app_options
                            ) -> AsyncIterator[Server]:
    """An API server under `tmp_path/data` (`store_url` "" is the default SQLite store).
    `join` serves the node-join endpoints; `customize` may add routes before it starts;
    `encryption` (an `encryptionconfig.Encryption`) encrypts at rest; `auditor` audits its
    requests (`apiserver.audit`); `users` get a bearer token each (no groups) and
    cluster-admin through a ClusterRoleBinding (not system:masters: authorization and flow
    control apply to them); `app_options` go to `make_app`. ServiceAccount admission is
    off unless asked for (`disable_admission_plugins=()`): no service-account controller
    runs here to make the `default` accounts pods need. `store_tls` (cafile, certfile,
    keyfile) goes with an etcd `store_url`."""
    data_dir = str(tmp_path / "data")
    server_dir = os.path.join(data_dir, "server")
    os.makedirs(server_dir, mode=0o700, exist_ok=True)
    certs = pki.ensure_pki(server_dir, cluster_domain="cluster.local", service_ip="10.43.0.1")
    tokens_path = os.path.join(server_dir, "cred", "tokens")
    tokens = TokenFile.ensure(tokens_path, "system:admin", ("system:masters",))
    user_tokens = {name: secrets.token_urlsafe(16) for name in users}
    if users:
        with open(tokens_path, "a", encoding="utf-8") as f:
            f.writelines(f"{token},{name},{name}\n" for name, token in user_tokens.items())
        tokens = TokenFile(tokens_path)
    store = open_backend(store_url, data_dir, **(store_tls or {}))
    await store.start()
    registry = Registry()
    await bootstrap(store, registry, encryption=encryption)
    app = apiserver.make_app(store, tokens, registry, join_pki=certs if join else None,
                             disable_admission_plugins=disable_admission_plugins,
                             encryption=encryption,
                             encryption_state=os.path.join(server_dir, "cred",
                                                           "encryption-state.json"),
                             auditor=auditor, **app_options)
    if users:  # may do everything through RBAC, yet are not system:masters
        await Client(InProcessTransport(app[apiserver.REST_KEY])).create(
            builtin("rbac.authorization.k8s.io/v1", "clusterrolebindings"), {
                "metadata": {"name": "test-users-cluster-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "cluster-admin"},
                "subjects": [{"kind": "User", "name": name} for name in users]})
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
                     app, user_tokens)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
