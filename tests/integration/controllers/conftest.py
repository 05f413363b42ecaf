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
from typing import Any

import pytest
import yaml

from k8py.agent.simulated import SimulatedNodes
from k8py.client.client import Client
from k8py.api.resources import builtin
from k8py.server import daemon, pki
from k8py.server.apiserver import app as apiserver, inprocess
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.controllers import manager
from k8py.server.controllers.base import Settings
from k8py.server.scheduler.scheduler import Scheduler
from tests.e2e.conftest import find_kubectl
from tests.integration.inloop import running_apiserver


@dataclasses.dataclass
class ControlPlane:
    client: Client
    nodes: SimulatedNodes
    kubeconfig: str
    home: str
    ca_file: str = ""
    # what the control loops run with, for tests that run them themselves (`loops=False`)
    manager_client: Client | None = None
    scheduling: manager.Scheduling | None = None
    settings: Settings | None = None
    client_for: Any = None

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
                              node_kwargs: dict | None = None, store_url: str = "memory://",
                              loops: bool = True):
    """`loops=False`: no controllers nor scheduler (the test runs them, elected)."""
    async with running_apiserver(tmp_path, store_url, disable_admission_plugins=()) as server:
        kubeconfig = str(tmp_path / "kubeconfig.yaml")
        pki.write_kubeconfig(server.certs, kubeconfig, server.url, 0o600)
        rest = server.app[apiserver.REST_KEY]
        client = Client(InProcessTransport(rest))  # the test's own: as the API server

        def as_user(user):
            return Client(InProcessTransport(rest, user=user))

        # each component as its own identity, as the server daemon runs them
        manager_client = as_user(inprocess.CONTROLLER_MANAGER)
        scheduler_client = as_user(inprocess.SCHEDULER)
        with open(server.certs.ca_cert) as f:
            settings = dataclasses.replace(settings or Settings(), ca_bundle=f.read(),
                                           ca_cert_file=server.certs.ca_cert,
                                           ca_key_file=server.certs.ca_key)
        # the packaged add-ons local-storage (the default StorageClass) and ingress (the
        # default IngressClass), as a server's deploy daemon applies them from manifests
        await client.create(builtin("storage.k8s.io/v1", "storageclasses"), yaml.safe_load(
            dict(daemon.PACKAGED_ADDONS)["local-storage"](None)))
        account, ingress_class = yaml.safe_load_all(dict(daemon.PACKAGED_ADDONS)["ingress"](None))
        await client.create(builtin("v1", "serviceaccounts"), account, "kube-system")
        await client.create(builtin("networking.k8s.io/v1", "ingressclasses"), ingress_class)
        simulated = SimulatedNodes(client, nodes, **(node_kwargs or {"heartbeat": 1.0}),
                                   client_for=lambda name: as_user(inprocess.node(name)))
        tasks = []
        try:
            nodes_ready = asyncio.Event()
            tasks.append(asyncio.create_task(simulated.run(nodes_ready)))
            await asyncio.wait_for(nodes_ready.wait(), 10)
            scheduling = (scheduler_client,
                          lambda informers: Scheduler(scheduler_client, informers).run)
            if loops:
                tasks.append(asyncio.create_task(manager.run_loops(
                    manager_client, settings,
                    client_for=lambda account: as_user(inprocess.controller(account)))))
                tasks.append(asyncio.create_task(manager.run_scheduler(scheduling)))
            yield ControlPlane(client, simulated, kubeconfig, str(tmp_path),
                               server.certs.ca_cert, manager_client, scheduling, settings,
                               lambda account: as_user(inprocess.controller(account)))
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception) and \
                        not isinstance(result, asyncio.CancelledError):
                    raise result


@pytest.fixture
async def cluster(tmp_path):
    async with start_control_plane(tmp_path) as control_plane:
        yield control_plane
