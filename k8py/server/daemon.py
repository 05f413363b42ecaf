"""`k8py server`: the control plane's daemons under one supervisor.

Start-up: certificates and tokens (`pki.ensure_pki`), then the store daemon opens the
datastore named by `--datastore-endpoint` (by default SQLite under `<data-dir>/server/db/`);
once it is ready, the API server bootstraps the system namespaces and the `kubernetes`
Service, allocates service addresses from `--service-cidr` and NodePorts from
`--service-node-port-range`, listens on `--bind-address:--https-listen-port`, writes the admin
kubeconfig, and from then on keeps the `kubernetes` Service's Endpoints and EndpointSlice
pointing at its advertised address (`apiserver.advertising`); its certificates are renewed
while it runs (`renewal`). SIGINT/SIGTERM stop the
API server, then close the store. The scheduler and controllers (`controllers.manager`) run
on the in-process transport once the API server has its REST handler, while this server holds
their leases (`kube-controller-manager`, `kube-scheduler`). Unless `--disable-agent`, the embedded agent
(`k8py.agent.daemon.run`) runs this host as a node on the in-process transport, with a kubelet
serving certificate issued from the cluster CA (`pki.ensure_kubelet_serving`); the API server
reaches it with `pki.ensure_kubelet_client`'s certificate.
The deploy daemon writes the packaged add-ons (`PACKAGED_ADDONS`, unless `--disable`d) into
`<data-dir>/server/manifests/` and applies that directory, as k3s's deploy controller
(`deploy`).

Secrets at rest: `--encryption-provider-config FILE` (upstream's) or `--secrets-encryption`
(k3s's: `keyrotation.ensure_generated` writes `<data-dir>/server/cred/encryption-config.json`
once) give the store an `Encryption`, checked before anything starts and reloaded while the
server runs whenever the file changes.
Unless `--etcd-disable-snapshots`, a `snapshots` daemon saves the datastore on
`--etcd-snapshot-schedule-cron` and keeps `--etcd-snapshot-retention` of them
(`etcdsnapshot`).
With `--cluster-init` (or `--server URL --token TOKEN`: joining another server's cluster;
`serverjoin`), the datastore is an embedded etcd (`embeddedetcd`): an `etcd` daemon runs the
member before the store opens on it, and `etcd-members` removes the member of a deleted
control-plane Node (`etcdmembers`). A data dir holding etcd data restarts its member the same
way without either flag.
With `--audit-policy-file` and
`--audit-log-path` the API server writes upstream's audit log (`apiserver.audit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import dataclasses
import ipaddress
import logging
import os
import socket
from collections.abc import Callable

import yaml

from k8py.api import errors
from k8py.api.resources import Registry, builtin
from k8py.lifecycle import Supervisor, notify_service_manager
from k8py.server import deploy, manifests, pki, renewal
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver import (apiservices, audit, crds, keyrotation, metricsapi, podproxy,
                                   serviceips)
from k8py.server.controllers import advertising, localpath
from k8py.client.client import Client
from k8py.server.apiserver.authn import TokenFile
from k8py.server.apiserver.encryptionconfig import Encryption
from k8py.server.apiserver.genericstore import GenericStore, WriteContext
from k8py.server.apiserver import inprocess, masterleases, rbacpolicy
from k8py.server.apiserver.authz import API_SERVER
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.apiserver.storage import ObjectStore
from k8py.server.apiserver.strategies import Strategies
from k8py.server.store import DEFAULT_SQLITE_PATH, open_backend
from k8py.server.store.backend import Backend, StoreError
from k8py.server.store.snapshot import snapshotter

METRICS_ADDON = "metrics-server"  # k3s's add-on name: `--disable metrics-server`
DNS_ADDON = "coredns"  # k3s's add-on name: `--disable coredns`
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# set by the server on its own node: NodeRestriction keeps kubelets from setting them
CONTROL_PLANE_LABELS = {"node-role.kubernetes.io/control-plane": "true",
                        "node-role.kubernetes.io/master": "true"}

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    data_dir: str = "/var/lib/k8py"
    datastore_endpoint: str = ""
    datastore_cafile: str | None = None
    datastore_certfile: str | None = None
    datastore_keyfile: str | None = None
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
    disable_ingress: bool = False
    ingress_http_port: int = 80
    ingress_https_port: int = 443
    flannel_backend: str = "vxlan"
    flannel_iface: str | None = None
    resolv_conf: str | None = None
    disable_scheduler: bool = False
    disable_controller_manager: bool = False
    horizontal_pod_autoscaler_sync_period: float = 15.0
    horizontal_pod_autoscaler_downscale_stabilization: float = 300.0
    horizontal_pod_autoscaler_tolerance: float = 0.1
    horizontal_pod_autoscaler_cpu_initialization_period: float = 300.0
    horizontal_pod_autoscaler_initial_readiness_delay: float = 30.0
    token: str | None = None
    tls_san: tuple[str, ...] = ()
    write_kubeconfig: str = "/etc/k8py/k8py.yaml"
    write_kubeconfig_mode: int = 0o600
    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200
    authorization_mode: str = "Node,RBAC"
    secrets_encryption: bool = False
    encryption_provider_config: str | None = None
    audit_policy_file: str | None = None
    audit_log_path: str | None = None
    audit_log_maxage: int = 0
    audit_log_maxbackup: int = 0
    audit_log_maxsize: int = 0
    audit_log_format: str = "json"
    disable: tuple[str, ...] = ()  # add-ons (manifests) not deployed, and removed if they were
    metric_resolution: float = 15.0  # seconds between scrapes of the kubelets (metrics.k8s.io)
    etcd_disable_snapshots: bool = False
    etcd_snapshot_schedule_cron: str = "0 */12 * * *"
    etcd_snapshot_retention: int = 5
    etcd_snapshot_dir: str | None = None  # default <data-dir>/server/db/snapshots
    etcd_snapshot_name: str = "etcd-snapshot"
    cluster_init: bool = False  # an embedded etcd, this server its first member
    server: str | None = None  # join this server's cluster (with token), embedded etcd
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380

    @property
    def serves_metrics(self) -> bool:
        """metrics.k8s.io is served unless the metrics-server add-on is disabled."""
        return METRICS_ADDON not in self.disable


async def run_store(store: Backend, ready: asyncio.Event,
                    etcd_ready: asyncio.Event | None = None,
                    migrate_from: str | None = None) -> None:
    """Hold the store open until cancelled (opened once the embedded etcd is, if any). With
    `migrate_from`, a SQLite database there is first moved into the (etcd) store, as k3s
    does when `--cluster-init` meets a SQLite datastore (`store.migrate.migrate_file`)."""
    if etcd_ready is not None:
        await etcd_ready.wait()
    await store.start()
    try:
        if migrate_from is not None:
            from k8py.server.store.migrate import migrate_file

            await migrate_file(migrate_from, store)
        stats = await store.stats()
        log.info("store ready at revision %d with %d keys", stats.revision, stats.keys)
        ready.set()
        await asyncio.Event().wait()
    finally:
        await store.close()
        log.info("store closed at revision %d", store.revision)


async def bootstrap(store: Backend, registry: Registry, *,
                    service_cidr: str | ipaddress.IPv4Network = serviceips.SERVICE_CIDR,
                    https_port: int = 6443, encryption: Encryption | None = None) -> None:
    """The system namespaces, the `kubernetes` Service in `default` (the first address of
    the service CIDR, 443 → the API server's port), the RBAC bootstrap policy
    (`rbacpolicy.reconcile`), the stored CRDs' resources in the registry, and an APIService for every group-version served (`apiservices`). Written
    through the write path (admission, strategies), as the API server itself
    (`kube-apiserver` in managedFields, as upstream's)."""
    objects = ObjectStore(store, encryption)
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
    await rbacpolicy.reconcile(writes, registry, context)
    await apiservices.ensure_builtin(objects, registry)
    if not registry.has_group_version(metricsapi.GROUP, metricsapi.VERSION):  # disabled
        await apiservices.remove(objects, registry, metricsapi.GROUP, metricsapi.VERSION)
    for crd in stored_crds:
        await apiservices.crd_written(objects, registry, crd)


def open_encryption(config: ServerConfig) -> Encryption | None:
    """The encryption configuration the flags ask for (ConfigError if it is unusable)."""
    if config.encryption_provider_config:
        return Encryption.open(config.encryption_provider_config)
    path = keyrotation.generated_path(config.data_dir)
    if not config.secrets_encryption:
        if os.path.exists(path):
            log.warning("%s exists but --secrets-encryption is not set: Secrets it encrypted "
                        "cannot be read", path)
        return None
    if keyrotation.ensure_generated(path):
        log.info("secrets encryption: generated %s", path)
    return Encryption.open(path, managed=True)


async def run_apiserver(config: ServerConfig, store: Backend, store_ready: asyncio.Event,
                        certs: pki.PKI, tokens: TokenFile,
                        handler: asyncio.Future | None = None,
                        encryption: Encryption | None = None) -> None:
    """Serve the API; `handler` receives the REST handler, for in-process clients."""
    await store_ready.wait()
    registry = Registry()
    if config.serves_metrics:
        metricsapi.install(registry)  # before bootstrap, which writes its APIService
    await bootstrap(store, registry, service_cidr=config.service_cidr,
                    https_port=config.https_listen_port, encryption=encryption)
    kubelet_client = podproxy.KubeletClient(*pki.ensure_kubelet_client(certs), certs.ca_cert)
    app = apiserver.make_app(store, tokens, registry, service_cidr=config.service_cidr,
                             node_port_range=config.service_node_port_range,
                             service_account_key=pki.ensure_service_key(certs),
                             cluster_domain=config.cluster_domain,
                             kubelet_client=kubelet_client,
                             join_pki=certs,
                             max_requests_inflight=config.max_requests_inflight,
                             max_mutating_requests_inflight=config.max_mutating_requests_inflight,
                             authorization_mode=config.authorization_mode,
                             encryption=encryption,
                             encryption_state=keyrotation.state_path(config.data_dir),
                             metric_resolution=config.metric_resolution
                             if config.serves_metrics else None,
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
    if encryption is not None:
        tasks.append(asyncio.create_task(encryption.follow()))
    try:
        await asyncio.wait([server, asyncio.create_task(listening.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if listening.is_set():
            host = "127.0.0.1" if config.bind_address.is_unspecified else str(config.bind_address)
            if ":" in host:
                host = f"[{host}]"
            url = f"https://{host}:{config.https_listen_port}"
            def kubeconfig() -> None:
                pki.write_kubeconfig(certs, config.write_kubeconfig, url,
                                     config.write_kubeconfig_mode)
                log.info("wrote admin kubeconfig %s", config.write_kubeconfig)
            kubeconfig()
            tasks.append(asyncio.create_task(renewal.keep_server_certificates(
                certs, serving=lambda: pki.issue_serving(certs, **serving_names(config)),
                serving_context=context, kubelet_client=kubelet_client.ssl,
                kubeconfig=kubeconfig)))
            notify_service_manager("READY=1")  # k8py.service is Type=notify
            # What start-up made (the registry, schemas, OpenAPI documents, the bootstrap
            # policy) lives as long as the process: out of the collector's way, so its full
            # collections walk only what requests and caches make (shorter pauses, p99).
            gc.freeze()
            address = advertising.advertised_address(config.bind_address, config.node_ip)
            log.info("advertising the API server as %s:%d", address, config.https_listen_port)
            client = Client(InProcessTransport(rest), field_manager=advertising.FIELD_MANAGER)
            tasks.append(asyncio.create_task(advertising.keep(
                client, address, config.https_listen_port,
                leases=masterleases.MasterLeases(store))))
        await server
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_etcd_members(member, handler: asyncio.Future) -> None:
    """The etcd member removal controller (`etcdmembers`), as the API server."""
    from k8py.server import etcdmembers

    rest = await handler
    client = Client(InProcessTransport(rest, "k8py-etcd-members", API_SERVER),
                    field_manager="k8py-etcd-members")
    await etcdmembers.keep_members(client, member.client())


async def run_control_loops(config: ServerConfig, handler: asyncio.Future) -> None:
    """The controllers and the scheduler on the in-process transport, each while elected
    (`manager.run_elected`)."""
    from k8py.server.controllers import manager
    from k8py.server.controllers.base import Settings
    from k8py.server.scheduler.scheduler import Scheduler

    rest = await handler

    def client_for(account: str) -> Client:
        return Client(InProcessTransport(rest, user=inprocess.controller(account)),
                      field_manager="k8py-controller-manager")

    client = Client(InProcessTransport(rest, user=inprocess.CONTROLLER_MANAGER),
                    field_manager="k8py-controller-manager")
    scheduler_client = Client(InProcessTransport(rest, "k8py-scheduler", inprocess.SCHEDULER),
                              field_manager="k8py-scheduler")
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
                        ca_key_file=os.path.join(tls_dir, "server-ca.key"),
                        storage_dir=os.path.join(config.data_dir, "storage"),
                        hpa_sync_period=config.horizontal_pod_autoscaler_sync_period,
                        hpa_downscale_stabilization=(
                            config.horizontal_pod_autoscaler_downscale_stabilization),
                        hpa_tolerance=config.horizontal_pod_autoscaler_tolerance,
                        hpa_cpu_initialization_period=(
                            config.horizontal_pod_autoscaler_cpu_initialization_period),
                        hpa_initial_readiness_delay=(
                            config.horizontal_pod_autoscaler_initial_readiness_delay))
    only = [] if config.disable_controller_manager else None
    scheduling = None if config.disable_scheduler else (
        scheduler_client, lambda informers: Scheduler(scheduler_client, informers).run)
    await manager.run_elected(client, settings, only=only, scheduling=scheduling,
                              client_for=client_for, host=config.node_name)


INGRESS_CLASS = {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                 "metadata": {"name": "k8py", "annotations": {
                     "ingressclass.kubernetes.io/is-default-class": "true"}},
                 "spec": {"controller": "k8py.io/ingress"}}
# the account TLS Secrets are read as (`k8py:ingress-secrets`); a joined agent asks for its
# token bound to its own Node (`k8py.agent.ingresstoken`), so the object must exist
INGRESS_SERVICE_ACCOUNT = {"apiVersion": "v1", "kind": "ServiceAccount",
                           "metadata": {"name": "k8py-ingress", "namespace": "kube-system"}}


def kube_dns_service(config: ServerConfig) -> list[dict]:
    """The `kube-system/kube-dns` Service at the cluster DNS address, with CoreDNS's labels
    (what k3s's coredns manifest names it): the address every agent answers DNS on
    (`k8py.net.dns`). None if that address is outside the service range (no ClusterIP)."""
    if config.cluster_dns not in config.service_cidr:
        return []
    address = str(config.cluster_dns)
    return [{"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "kube-dns", "namespace": "kube-system",
                          "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS",
                                     "kubernetes.io/cluster-service": "true"}},
             "spec": {"clusterIP": address, "clusterIPs": [address],
                      "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}}]


# Packaged add-ons: (name, its manifest for this server's configuration). Each is written
# into <data-dir>/server/manifests/<name>.yaml at start unless --disable names it
# (`manifests.stage`); the deploy controller applies it from there.
PACKAGED_ADDONS: list[tuple[str, Callable[[ServerConfig], str]]] = [
    # k3s's names, so `--disable local-storage` is k3s's
    ("local-storage", lambda config: yaml.safe_dump(localpath.STORAGE_CLASS, sort_keys=False)),
    # the built-in ingress controller's class, the default (k3s ships Traefik's as default)
    ("ingress", lambda config: yaml.safe_dump_all([INGRESS_SERVICE_ACCOUNT, INGRESS_CLASS],
                                                  sort_keys=False)),
    # the cluster DNS Service; the agents answer at its address (k3s: CoreDNS's manifest)
    (DNS_ADDON, lambda config: yaml.safe_dump_all(kube_dns_service(config), sort_keys=False)),
    # metrics.k8s.io is served by the API server itself; the add-on's manifest is
    # metrics-server's aggregated reader role, and disabling it also stops the API
    (METRICS_ADDON, lambda config: yaml.safe_dump(metricsapi.AGGREGATED_READER,
                                                  sort_keys=False)),
]


async def run_snapshots(config: ServerConfig, snapshots, store_ready: asyncio.Event) -> None:
    """Scheduled datastore snapshots (`etcdsnapshot.keep_scheduled`), once the store is open;
    never ends by itself (the supervisor would stop the server)."""
    from k8py.server import etcdsnapshot
    from k8py.server.controllers import cron

    await store_ready.wait()
    directory = config.etcd_snapshot_dir or etcdsnapshot.default_dir(config.data_dir)
    log.info("etcd snapshots on schedule %r into %s, keeping %d",
             config.etcd_snapshot_schedule_cron, directory, config.etcd_snapshot_retention)
    await etcdsnapshot.keep_scheduled(
        snapshots, directory, config.etcd_snapshot_name,
        etcdsnapshot.node_name(config.node_name), cron.parse(config.etcd_snapshot_schedule_cron),
        config.etcd_snapshot_retention)
    await asyncio.Event().wait()


def manifests_dir(config: ServerConfig) -> str:
    return os.path.join(config.data_dir, "server", "manifests")


async def run_deploy(config: ServerConfig, handler: asyncio.Future) -> None:
    """The packaged add-ons staged, then the manifests directory applied, forever
    (`deploy.Deployer`), as the API server."""
    directory = manifests_dir(config)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name, render in PACKAGED_ADDONS:
        if manifests.stage(directory, name, render(config), config.disable):
            log.info("staged packaged add-on %s", name)
    rest = await handler
    client = Client(InProcessTransport(rest, "k8py-deploy", API_SERVER),
                    field_manager="k8py-deploy")
    await deploy.Deployer(client, rest.registry, directory, config.disable).run()


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
        resolv_conf=config.resolv_conf or "/etc/resolv.conf",
        cluster_dns_server=DNS_ADDON not in config.disable,
        ingress=not config.disable_ingress and "ingress" not in config.disable, ingress_http_port=config.ingress_http_port,
        ingress_https_port=config.ingress_https_port)
    addresses = (node_config.node_ip,)
    serving_cert, serving_key = pki.ensure_kubelet_serving(
        certs, node_config.agent_dir, node_config.node_name, addresses)
    node_config = dataclasses.replace(node_config, tls_cert=serving_cert, tls_key=serving_key,
                                      client_ca=certs.ca_cert)
    rest = await handler
    client = Client(InProcessTransport(rest, "k8py-kubelet", inprocess.node(node_config.node_name)),
                    field_manager="k8py-kubelet")
    labelling = asyncio.create_task(label_control_plane(
        Client(InProcessTransport(rest), field_manager="k8py"), node_config.node_name))
    renewing = asyncio.create_task(renewal.keep_kubelet_serving(
        certs, node_config.agent_dir, node_config.node_name, addresses))
    # the ingress controller's TLS Secrets, read as its own account (not as the node)
    ingress_secrets = Client(InProcessTransport(rest, "k8py-ingress",
                                                inprocess.controller("k8py-ingress")))
    try:
        await agent.run(node_config, client, ingress_secrets=ingress_secrets)
    finally:
        labelling.cancel()
        renewing.cancel()
        await asyncio.gather(labelling, renewing, return_exceptions=True)


async def label_control_plane(client: Client, name: str, interval: float = 1.0) -> None:
    """The server's node-role labels on its own node, once the kubelet has registered it
    (as the API server: a kubelet may not set them)."""
    nodes = builtin("v1", "nodes")
    while True:
        try:
            await client.patch(nodes, name, {"metadata": {"labels": CONTROL_PLANE_LABELS}})
            log.info("labelled node %s as a control-plane node", name)
            return
        except errors.NotFound:
            await asyncio.sleep(interval)
        except errors.StatusError as exc:
            log.warning("labelling node %s: %s", name, exc)
            await asyncio.sleep(interval)


def serving_names(config: ServerConfig) -> dict:
    """What the serving certificate names, as `pki.ensure_pki`/`issue_serving` take it."""
    # Agents reach the server at its bind or node address: the certificate must name them.
    # and at the address it advertises in the kubernetes endpoints (agents fail over to it)
    own_addresses = tuple(str(ip) for ip in (config.bind_address, config.node_ip)
                          if ip is not None and not ip.is_unspecified) + (
        advertising.advertised_address(config.bind_address, config.node_ip),)
    return {"cluster_domain": config.cluster_domain,
            "service_ip": str(next(config.service_cidr.hosts())),
            "tls_san": config.tls_san + own_addresses}


def etcd_member(config: ServerConfig, *, embedded: bool = False):
    """This server's embedded etcd member, or None when its datastore is another one
    (`embedded`: the member it runs even without etcd data or flags saying so yet, for a
    restore of an etcd snapshot into a data dir whose datastore is gone)."""
    from k8py.agent.config import detect_node_ip
    from k8py.server import embeddedetcd, etcdpki

    db_dir = os.path.join(config.data_dir, "server", "db")
    probe = embeddedetcd.Member("", db_dir, "", 0, 0, etcdpki.paths(config.data_dir))
    if not (embedded or config.cluster_init or config.server or probe.has_data()):
        return None
    node_ip = str(config.node_ip) if config.node_ip else detect_node_ip()
    # the member is named as the node is (the agent's default: the hostname)
    name = (config.node_name or socket.gethostname()).lower()
    return dataclasses.replace(probe, name=name, node_ip=node_ip,
                               client_port=config.etcd_client_port,
                               peer_port=config.etcd_peer_port)


async def run(config: ServerConfig) -> None:
    server_dir = os.path.join(config.data_dir, "server")
    os.makedirs(server_dir, mode=0o700, exist_ok=True)
    member = etcd_member(config)
    join = None
    if member is not None and config.server and not member.has_data():
        from k8py.server import serverjoin
        join = await serverjoin.bootstrap(config.server, config.token or "", server_dir)
    certs = pki.ensure_pki(server_dir, **serving_names(config), token=config.token)
    pki.ensure_kubelet_client(certs)  # what the API server shows kubelets
    tokens = TokenFile.ensure(os.path.join(server_dir, "cred", "tokens"), pki.ADMIN_USER,
                              (pki.ADMIN_GROUP,))
    encryption = open_encryption(config)
    supervisor = Supervisor()
    if member is not None:
        from k8py.server import embeddedetcd, etcdpki

        member = dataclasses.replace(member, certs=etcdpki.ensure(
            config.data_dir, member.name, (member.node_ip,)))
        cert, key = member.certs.client_cert
        store = open_backend(member.local_client_url, config.data_dir,
                             cafile=member.certs.server_ca, certfile=cert, keyfile=key)
        etcd_ready = asyncio.Event()
        supervisor.add("etcd", lambda: embeddedetcd.run_etcd(member, etcd_ready, join=join))
    else:
        store = open_backend(config.datastore_endpoint, config.data_dir,
                             cafile=config.datastore_cafile, certfile=config.datastore_certfile,
                             keyfile=config.datastore_keyfile)
        etcd_ready = None
    store_ready = asyncio.Event()
    # the first server of an embedded etcd takes a SQLite datastore of this data dir with it
    migrate_from = os.path.join(config.data_dir, DEFAULT_SQLITE_PATH) \
        if member is not None and not config.server else None
    supervisor.add("store", lambda: run_store(store, store_ready, etcd_ready, migrate_from))
    handler: asyncio.Future = asyncio.get_running_loop().create_future()
    supervisor.add("apiserver",
                   lambda: run_apiserver(config, store, store_ready, certs, tokens, handler,
                                         encryption))
    if not (config.disable_scheduler and config.disable_controller_manager):
        supervisor.add("controllers", lambda: run_control_loops(config, handler))
    supervisor.add("deploy", lambda: run_deploy(config, handler))
    if member is not None:
        supervisor.add("etcd-members", lambda: run_etcd_members(member, handler))
    if config.etcd_disable_snapshots:
        log.info("ETCD snapshots are disabled")
    elif member is not None:
        from k8py.server.store import etcdsnapshot as etcd_snapshots
        from k8py.server.store.etcdclient import parse_endpoints

        cert, key = member.certs.client_cert
        snapshots = etcd_snapshots.EtcdSnapshots(
            parse_endpoints(member.local_client_url),
            member=etcd_snapshots.Member(member.data_dir, member.name, member.peer_url),
            cafile=member.certs.server_ca, certfile=cert, keyfile=key)
        supervisor.add("snapshots", lambda: run_snapshots(config, snapshots, store_ready))
    else:
        try:
            snapshots = snapshotter(config.datastore_endpoint, config.data_dir,
                                    cafile=config.datastore_cafile,
                                    certfile=config.datastore_certfile,
                                    keyfile=config.datastore_keyfile)
        except StoreError as exc:  # NoSnapshots, or an unreadable embedded etcd config
            log.info("no scheduled snapshots: %s", exc)
        else:
            supervisor.add("snapshots", lambda: run_snapshots(config, snapshots, store_ready))
    if not config.disable_agent:
        supervisor.add("agent", lambda: run_agent(config, handler, certs))
    await supervisor.run()
