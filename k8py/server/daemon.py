"""`k8py server`: the control plane's daemons under one supervisor.

Today the server runs its store: it opens the datastore named by `--datastore-endpoint`
(by default SQLite under `<data-dir>/server/db/`), compacts it and expires keys as it runs, and
closes it cleanly on SIGINT/SIGTERM. The API server, scheduler and controllers join here as
they are built; until then the server says plainly that it serves no API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os

from k8py.lifecycle import Supervisor
from k8py.server.store import open_backend
from k8py.server.store.backend import Backend

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    data_dir: str = "/var/lib/k8py"
    datastore_endpoint: str = ""
    bind_address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address("0.0.0.0")
    https_listen_port: int = 6443
    cluster_cidr: ipaddress.IPv4Network = ipaddress.ip_network("10.42.0.0/16")
    service_cidr: ipaddress.IPv4Network = ipaddress.ip_network("10.43.0.0/16")
    cluster_dns: ipaddress.IPv4Address = ipaddress.ip_address("10.43.0.10")
    cluster_domain: str = "cluster.local"
    node_name: str | None = None
    disable_agent: bool = False
    token: str | None = None
    tls_san: tuple[str, ...] = ()
    write_kubeconfig: str = "/etc/k8py/k8py.yaml"
    write_kubeconfig_mode: int = 0o600


async def run_store(store: Backend, ready: asyncio.Event) -> None:
    """Hold the store open until cancelled."""
    await store.start()
    try:
        stats = await store.stats()
        log.info("store ready at revision %d with %d keys", stats.revision, stats.keys)
        ready.set()
        await asyncio.Event().wait()
    finally:
        await store.close()
        log.info("store closed at revision %d", store.revision)


async def run(config: ServerConfig) -> None:
    os.makedirs(os.path.join(config.data_dir, "server"), mode=0o700, exist_ok=True)
    store = open_backend(config.datastore_endpoint, config.data_dir)
    store_ready = asyncio.Event()
    supervisor = Supervisor()
    supervisor.add("store", lambda: run_store(store, store_ready))
    log.warning("the API server is not built yet: this server runs its datastore only")
    if not config.disable_agent:
        log.warning("the embedded agent is not built yet: running without one")
    await supervisor.run()
