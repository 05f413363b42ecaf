"""`k8py server`: the control plane's daemons under one supervisor.

Start-up: certificates and tokens (`pki.ensure_pki`), then the store daemon opens the
datastore named by `--datastore-endpoint` (by default SQLite under `<data-dir>/server/db/`);
once it is ready, the API server bootstraps the system namespaces and the `kubernetes`
Service, allocates service addresses from `--service-cidr` and NodePorts from
`--service-node-port-range`, listens on `--bind-address:--https-listen-port`, writes the admin
kubeconfig, and from then on keeps the `kubernetes` Service's Endpoints and EndpointSlice
pointing at its advertised address (`apiserver.advertising`). SIGINT/SIGTERM stop the
API server, then close the store. The scheduler and controllers (`controllers.manager`) run
on the in-process transport once the API server has its REST handler, while this server holds
the controller-manager lease. Unless `--disable-agent`, the embedded agent
(`k8py.agent.daemon.run`) runs this host as a node on the in-process transport, with a kubelet
serving certificate issued from the cluster CA (`pki.ensure_kubelet_serving`); the API server
reaches it with `pki.ensure_kubelet_client`'s certificate. With `--audit-policy-file` and
`--audit-log-path` the API server writes upstream's audit log (`apiserver.audit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os

from k8py.api import errors
from k8py.api.resources import Registry
from k8py.lifecycle import Supervisor, notify_service_manager
from k8py.server import pki
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver import apiservices, audit, crds, podproxy, serviceips
from k8py.server.controllers import advertising
from k8py.client.client import Client
from k8py.server.apiserver.authn import TokenFile, User
from k8py.server.apiserver.genericstore import GenericStore, WriteContext
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.apiserver.storage import ObjectStore
from k8py.server.apiserver.strategies import Strategies
from k8py.server.store import open_backend
from k8py.server.store.backend import Backend

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
API_SERVER = User("system:apiserver", ("system:masters",))

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    data_dir: str = "/var/lib/k8py"
    datastore_endpoint: str = ""
    bind_address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address("0.0.0.0")
    https_listen_port: int = 6443
    cluster_cidr: ipaddress.IPv4Network = ipaddress.ip_network("10.42.0.0/16")
    service_cidr: ipaddress.IPv4Network = ipaddress.ip_network("10.43.0.0/16")
    service_node_port_range: tuple[int, int] = (30000, 32767)
    cluster_dns: ipaddress.IPv4Address = ipaddress.ip_address("10.43.0.10")
    cluster_domain: str = "cluster.local"
    node_name: str | None = None
    node_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    node_label: tuple[str, ...] = ()
    container_runtime_endpoint: str | None = None
    kubelet_port: int = 10250
    disable_agent: bool = False
    disable_kube_proxy: bool = False
    disable_network_policy: bool = False
    flannel_backend: str = "vxlan"
    flannel_iface: str | None = None
    resolv_conf: str | None = None
    disable_scheduler: bool = False
    disable_controller_manager: bool = False
    token: str | None = None
    tls_san: tuple[str, ...] = ()
    write_kubeconfig: str = "/etc/k8py/k8py.yaml"
    write_kubeconfig_mode: int = 0o600
    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200
    audit_policy_file: str | None = None
    audit_log_path: str | None = None
    audit_log_maxage: int = 0
    audit_log_maxbackup: int = 0
    audit_log_maxsize: int = 0
    audit_log_format: str = "json"


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


async def bootstrap(store: Backend, registry: Registry, *,
                    service_cidr: str | ipaddress.IPv4Network = serviceips.SERVICE_CIDR,
                    https_port: int = 6443, cluster_dns: str | None = None) -> None:
    """The system namespaces, the `kubernetes` Service in `default` (the first address of
    the service CIDR, 443 → the API server's port), the stored CRDs' resources in the
    registry, and an APIService for every group-version served (`apiservices`). Written
    through the write path (admission, strategies), as the API server itself
    (`kube-apiserver` in managedFields, as upstream's)."""
    objects = ObjectStore(store)
    stored_crds = await crds.load(registry, objects)
    writes = GenericStore(registry, objects, Strategies(
        registry, objects, serviceips.ServiceIPs(objects, service_cidr)))
    context = WriteContext(user=API_SERVER, manager="kube-apiserver")
    for name in SYSTEM_NAMESPACES:
        with contextlib.suppress(errors.AlreadyExists):
            await writes.create(registry.get("", "v1", "namespaces"), None,
                                {"metadata": {"name": name}}, context)
    service_ip = str(next(ipaddress.IPv4Network(service_cidr).hosts()))
    with contextlib.suppress(errors.AlreadyExists):
        await writes.create(registry.get("", "v1", "services"), "default", {
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": service_ip, "clusterIPs": [service_ip],
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": https_port}]}}, context)
    if cluster_dns and ipaddress.ip_address(cluster_dns) in ipaddress.IPv4Network(service_cidr):
        with contextlib.suppress(errors.AlreadyExists):
            await writes.create(registry.get("", "v1", "services"), "kube-system", {
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                             "labels": {"k8s-app": "kube-dns",
                                        "kubernetes.io/name": "CoreDNS",
                                        "kubernetes.io/cluster-service": "true"}},
                "spec": {"clusterIP": cluster_dns, "clusterIPs": [cluster_dns],
                         "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                   {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
                context)
    await apiservices.ensure_builtin(objects, registry)
    for crd in stored_crds:
        await apiservices.crd_written(objects, registry, crd)


async def run_apiserver(config: ServerConfig, store: Backend, store_ready: asyncio.Event,
                        certs: pki.PKI, tokens: TokenFile,
                        handler: asyncio.Future | None = None) -> None:
    """Serve the API; `handler` receives the REST handler, for in-process clients."""
    await store_ready.wait()
    registry = Registry()
    await bootstrap(store, registry, service_cidr=config.service_cidr,
                    https_port=config.https_listen_port, cluster_dns=str(config.cluster_dns))
    app = apiserver.make_app(store, tokens, registry, service_cidr=config.service_cidr,
                             node_port_range=config.service_node_port_range,
                             service_account_key=pki.ensure_service_key(certs),
                             cluster_domain=config.cluster_domain,
                             kubelet_client=podproxy.KubeletClient(
                                 *pki.ensure_kubelet_client(certs), certs.ca_cert),
                             join_pki=certs,
                             max_requests_inflight=config.max_requests_inflight,
                             max_mutating_requests_inflight=config.max_mutating_requests_inflight,
                             auditor=audit.from_flags(
                                 config.audit_policy_file, config.audit_log_path,
                                 max_age=config.audit_log_maxage,
                                 max_backups=config.audit_log_maxbackup,
                                 max_size=config.audit_log_maxsize,
                                 log_format=config.audit_log_format))
    rest = app[apiserver.REST_KEY]
    if handler is not None:
        handler.set_result(rest)
    context = apiserver.tls_context(certs.serving_cert, certs.serving_key, certs.ca_cert)
    listening = asyncio.Event()
    server = asyncio.create_task(apiserver.serve(
        app, str(config.bind_address), config.https_listen_port, context, listening))
    tasks = [server]
    try:
        await asyncio.wait([server, asyncio.create_task(listening.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if listening.is_set():
            host = "127.0.0.1" if config.bind_address.is_unspecified else str(config.bind_address)
            if ":" in host:
                host = f"[{host}]"
            url = f"https://{host}:{config.https_listen_port}"
            pki.write_kubeconfig(certs, config.write_kubeconfig, url, config.write_kubeconfig_mode)
            log.info("wrote admin kubeconfig %s", config.write_kubeconfig)
            notify_service_manager("READY=1")  # k8py.service is Type=notify
            address = advertising.advertised_address(config.bind_address)
            log.info("advertising the API server as %s:%d", address, config.https_listen_port)
            client = Client(InProcessTransport(rest), field_manager=advertising.FIELD_MANAGER)
            tasks.append(asyncio.create_task(
                advertising.keep(client, address, config.https_listen_port)))
        await server
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_control_loops(config: ServerConfig, handler: asyncio.Future) -> None:
    """The controllers and, beside them on their informers, the scheduler, on the
    in-process transport, while elected."""
    from k8py.server.controllers import manager
    from k8py.server.controllers.base import Settings
    from k8py.server.scheduler.scheduler import Scheduler

    client = Client(InProcessTransport(await handler), field_manager="k8py-controller-manager")
    try:  # written by pki.ensure_pki before any daemon starts
        with open(os.path.join(config.data_dir, "server", "tls", "server-ca.crt")) as f:
            ca_bundle = f.read()
    except FileNotFoundError:
        log.warning("no cluster CA in %s: kube-root-ca.crt is not published", config.data_dir)
        ca_bundle = ""
    tls_dir = os.path.join(config.data_dir, "server", "tls")
    settings = Settings(cluster_cidr=str(config.cluster_cidr),
                        service_cidr=str(config.service_cidr),
                        node_port_range=config.service_node_port_range, ca_bundle=ca_bundle,
                        ca_cert_file=os.path.join(tls_dir, "server-ca.crt"),
                        ca_key_file=os.path.join(tls_dir, "server-ca.key"))
    only = [] if config.disable_controller_manager else None
    beside = {} if config.disable_scheduler else {
        "the scheduler": lambda informers: Scheduler(client, informers).run}
    await manager.run_elected(client, settings, only=only, beside=beside)


async def run_agent(config: ServerConfig, handler: asyncio.Future, certs: pki.PKI) -> None:
    """The embedded agent: this host as a node, on the in-process transport."""
    from k8py.agent import daemon as agent
    from k8py.agent.config import agent_config

    node_config = agent_config(
        data_dir=config.data_dir, node_name=config.node_name,
        node_ip=str(config.node_ip) if config.node_ip else "",
        cluster_dns=str(config.cluster_dns), cluster_domain=config.cluster_domain,
        kubelet_port=config.kubelet_port,
        container_runtime_endpoint=config.container_runtime_endpoint,
        node_labels=config.node_label, is_server=True,
        cluster_cidr=str(config.cluster_cidr), service_proxy=not config.disable_kube_proxy,
        network_policy=not config.disable_network_policy,
        flannel_backend=config.flannel_backend, flannel_iface=config.flannel_iface,
        resolv_conf=config.resolv_conf or "/etc/resolv.conf")
    serving_cert, serving_key = pki.ensure_kubelet_serving(
        certs, node_config.agent_dir, node_config.node_name, (node_config.node_ip,))
    node_config = dataclasses.replace(node_config, tls_cert=serving_cert, tls_key=serving_key,
                                      client_ca=certs.ca_cert)
    client = Client(InProcessTransport(await handler), field_manager="k8py-kubelet")
    await agent.run(node_config, client)


async def run(config: ServerConfig) -> None:
    server_dir = os.path.join(config.data_dir, "server")
    os.makedirs(server_dir, mode=0o700, exist_ok=True)
    service_ip = str(next(config.service_cidr.hosts()))
    # Agents reach the server at its bind or node address: the certificate must name them.
    own_addresses = tuple(str(ip) for ip in (config.bind_address, config.node_ip)
                          if ip is not None and not ip.is_unspecified)
    certs = pki.ensure_pki(server_dir, cluster_domain=config.cluster_domain,
                           service_ip=service_ip, tls_san=config.tls_san + own_addresses,
                           token=config.token)
    pki.ensure_kubelet_client(certs)  # what the API server shows kubelets
    tokens = TokenFile.ensure(os.path.join(server_dir, "cred", "tokens"), pki.ADMIN_USER,
                              (pki.ADMIN_GROUP,))
    store = open_backend(config.datastore_endpoint, config.data_dir)
    store_ready = asyncio.Event()
    supervisor = Supervisor()
    supervisor.add("store", lambda: run_store(store, store_ready))
    handler: asyncio.Future = asyncio.get_running_loop().create_future()
    supervisor.add("apiserver",
                   lambda: run_apiserver(config, store, store_ready, certs, tokens, handler))
    if not (config.disable_scheduler and config.disable_controller_manager):
        supervisor.add("controllers", lambda: run_control_loops(config, handler))
    if not config.disable_agent:
        supervisor.add("agent", lambda: run_agent(config, handler, certs))
    await supervisor.run()
