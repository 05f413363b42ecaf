"""A control plane in the test's event loop: the API server on a memory store (served over
HTTPS on a loopback port too, with an admin kubeconfig, for kubectl), the scheduler and every
controller on the in-process transport, and simulated nodes.

`cluster` gives a `ControlPlane` with `client` (in process), `nodes` (the `SimulatedNodes`),
`kubeconfig` and `kubectl(...)`. Tests that need other nodes or settings build their own
with `start_control_plane`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess

import pytest

from k8py.agent.simulated import SimulatedNodes
from k8py.client.client import Client
from k8py.api.resources import Registry
from k8py.server import pki
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver.authn import TokenFile
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.controllers import manager
from k8py.server.controllers.base import Settings
from k8py.server.daemon import bootstrap
from k8py.server.store import open_backend
from tests.e2e.conftest import find_kubectl, free_port


@dataclasses.dataclass
class ControlPlane:
    client: Client
    nodes: SimulatedNodes
    kubeconfig: str
    home: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 30) -> subprocess.CompletedProcess:
        env = {**os.environ, "HOME": self.home, "KUBECONFIG": self.kubeconfig}
        proc = subprocess.run([find_kubectl(), "--cache-dir", os.path.join(self.home, "cache"),
                               *args], input=input, capture_output=True, text=True, env=env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    async def akubectl(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """kubectl without blocking the event loop the control plane runs in."""
        return await asyncio.to_thread(self.kubectl, *args, **kwargs)


@contextlib.asynccontextmanager
async def start_control_plane(tmp_path, *, nodes: int = 3, settings: Settings | None = None,
                              node_kwargs: dict | None = None, store_url: str = "memory://"):
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
    app = apiserver.make_app(store, tokens, registry)
    port = free_port()
    listening = asyncio.Event()
    tasks = [asyncio.create_task(apiserver.serve(
        app, "127.0.0.1", port, apiserver.tls_context(certs.serving_cert, certs.serving_key,
                                                       certs.ca_cert), listening))]
    kubeconfig = str(tmp_path / "kubeconfig.yaml")
    client = Client(InProcessTransport(app[apiserver.REST_KEY]))
    with open(certs.ca_cert) as f:
        settings = dataclasses.replace(settings or Settings(), ca_bundle=f.read())
    simulated = SimulatedNodes(client, nodes, **(node_kwargs or {"heartbeat": 1.0}))
    try:
        await asyncio.wait_for(listening.wait(), 10)
        pki.write_kubeconfig(certs, kubeconfig, f"https://127.0.0.1:{port}", 0o600)
        nodes_ready = asyncio.Event()
        tasks.append(asyncio.create_task(simulated.run(nodes_ready)))
        await asyncio.wait_for(nodes_ready.wait(), 10)
        tasks.append(asyncio.create_task(manager.run_loops(client, settings)))
        yield ControlPlane(client, simulated, kubeconfig, str(tmp_path))
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                raise result


@pytest.fixture
async def cluster(tmp_path):
    async with start_control_plane(tmp_path) as control_plane:
        yield control_plane
