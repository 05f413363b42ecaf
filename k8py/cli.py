"""The `k8py` command: `k8py server`, `k8py agent`, `k8py certificate`, `k8py secrets-encrypt`,
`k8py etcd-snapshot`, `k8py --version`.

Flags follow k3s's names. Every flag can also come from `K8PY_<FLAG>` or the config file (see
`k8py.config`). Usage errors are one line naming the flag or key, with exit code 2; runtime
errors (an unusable database, a locked data dir) are one line with exit code 1. Never a
traceback for the operator's mistakes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import socket
import sys

import click

from k8py import KUBERNETES_VERSION, __version__, etcdmember, secretsencrypt
from k8py.config import (CIDR, ConfiguredCommand, DNSName, Duration, FileMode, IPAddress, PortRange,
                         option)
from k8py.lifecycle import use_one_malloc_arena

log = logging.getLogger("k8py")


def _node_network_options(f):
    """What a node's network part takes, on `k8py server` (its embedded agent) and `k8py
    agent` alike."""
    for decorator in reversed([
        option("--disable-kube-proxy", is_flag=True,
               help="Keep no Service rules in nftables on this host (another proxy does)"),
        option("--disable-network-policy", is_flag=True,
               help="Enforce no NetworkPolicy on this host's pods"),
        option("--disable-ingress", is_flag=True,
               help="Run no ingress controller on this host (k3s: --disable traefik)"),
        option("--ingress-http-port", type=click.IntRange(1, 65535), default=80,
               show_default=True, help="Port the ingress controller serves HTTP on"),
        option("--ingress-https-port", type=click.IntRange(1, 65535), default=443,
               show_default=True, help="Port the ingress controller serves HTTPS on"),
        option("--flannel-backend", type=click.Choice(["vxlan", "host-gw", "none"]),
               default="vxlan", show_default=True, help="How pods reach pods on other nodes"),
        option("--flannel-iface", default=None, metavar="IFACE",
               help="Interface for the pod network across nodes (default: the node "
                    "address's)"),
        option("--resolv-conf", default=None, metavar="FILE",
               help="The host's resolvers, for pods with dnsPolicy Default and names outside "
                    "the cluster (default /etc/resolv.conf)"),
    ]):
        f = decorator(f)
    return f


def _audit_options(f):
    """kube-apiserver's audit log flags (k3s passes them with --kube-apiserver-arg)."""
    for decorator in reversed([
        option("--audit-policy-file", type=click.Path(dir_okay=False), default=None,
               metavar="FILE", help="Audit policy (audit.k8s.io/v1 Policy, YAML or JSON); "
               "with --audit-log-path, requests are audited"),
        option("--audit-log-path", default=None, metavar="FILE",
               help="File the audit events go to, one JSON line each ('-': standard output)"),
        option("--audit-log-maxage", type=click.IntRange(0), default=0, show_default=True,
               metavar="DAYS", help="Days to keep rotated audit logs (0: any age)"),
        option("--audit-log-maxbackup", type=click.IntRange(0), default=0, show_default=True,
               metavar="N", help="Rotated audit logs to keep (0: all)"),
        option("--audit-log-maxsize", type=click.IntRange(0), default=0, show_default=True,
               metavar="MB", help="Megabytes of audit log before it is rotated (0: 100)"),
        option("--audit-log-format", type=click.Choice(["json", "legacy"]), default="json",
               show_default=True, help="Format of audit events (only json is supported)"),
    ]):
        f = decorator(f)
    return f


def _check_audit_flags(flags: dict) -> None:
    """The policy file parses and the log file can be made, before anything starts."""
    from k8py.server.apiserver import auditlog, auditpolicy

    if flags["audit_log_format"] != "json":
        raise click.BadParameter("'legacy' (upstream's one-line text) is not supported: k8py "
                                 "writes json only", param_hint="'--audit-log-format'")
    if flags["audit_policy_file"]:
        try:
            auditpolicy.load(flags["audit_policy_file"])
        except auditpolicy.PolicyError as exc:
            raise click.BadParameter(f"loading audit policy file: {exc}",
                                     param_hint="'--audit-policy-file'") from None
    if flags["audit_log_path"] and flags["audit_log_path"] != "-":
        try:
            auditlog.ensure_file(flags["audit_log_path"])
        except OSError as exc:
            raise click.BadParameter(f"cannot create the audit log: {exc.strerror}",
                                     param_hint="'--audit-log-path'") from None


def _snapshot_server_options(f):
    """k3s's snapshot flags of `server`: the schedule, and a restore (`--cluster-reset`)."""
    for decorator in reversed([
        option("--etcd-disable-snapshots", is_flag=True,
               help="Take no scheduled datastore snapshots"),
        option("--etcd-snapshot-schedule-cron", default="0 */12 * * *", show_default=True,
               metavar="SCHEDULE", callback=lambda ctx, param, value: _cron(value),
               help="When to take scheduled snapshots (cron, system time)"),
        option("--etcd-snapshot-retention", type=click.IntRange(0), default=5,
               show_default=True, help="Scheduled snapshots to keep (0: all)"),
        option("--etcd-snapshot-dir", default=None, metavar="DIR",
               help="Snapshot directory (default <data-dir>/server/db/snapshots)"),
        option("--etcd-snapshot-name", default="etcd-snapshot", show_default=True,
               help="Base name of scheduled snapshots (-<node>-<unix time> is appended)"),
        option("--cluster-reset", is_flag=True,
               help="With --cluster-reset-restore-path: restore the snapshot into the data "
                    "dir and exit"),
        option("--cluster-reset-restore-path", default=None, metavar="FILE",
               help="Snapshot to restore (a path, or a name in the snapshot directory)"),
    ]):
        f = decorator(f)
    return f


def _cron(value: str) -> str:
    from k8py.server.controllers import cron

    try:
        cron.parse(value)
    except cron.ScheduleError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _common_options(f):
    for decorator in reversed(
        [
            option("--config", "-c", type=click.Path(dir_okay=False),
                   help="YAML config file (keys are long flag names)",
                   default=None, expose_value=False, is_eager=True),
            option("--data-dir", "-d", default="/var/lib/k8py", show_default=True,
                   type=click.Path(file_okay=False), help="Folder to hold state"),
            option("--node-name", type=DNSName(), help="Node name (default: the hostname)"),
            option("--token", "-t", help="Shared secret used to join agents to the server"),
            option("--debug", is_flag=True, help="Log at debug level"),
        ]
    ):
        f = decorator(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", "-v",
    message=f"k8py version v{__version__} (Kubernetes {KUBERNETES_VERSION}+k8py)",
)
def cli() -> None:
    """k8py: a lightweight Kubernetes in one Python program."""


@cli.command(cls=ConfiguredCommand)
@_common_options
@option("--datastore-endpoint", default="", metavar="URL",
        help="Datastore URL: sqlite:///path, sqlite:// (default, under the data dir), memory://,"
             " or etcd: https://h1:2379,https://h2:2379")
@option("--datastore-cafile", default=None, metavar="FILE",
        help="CA certificate of the etcd datastore's serving certificates")
@option("--datastore-certfile", default=None, metavar="FILE",
        help="Client certificate for the etcd datastore")
@option("--datastore-keyfile", default=None, metavar="FILE",
        help="Client key for the etcd datastore")
@option("--bind-address", type=IPAddress(), default="0.0.0.0", show_default=True,
        help="Address the API server listens on")
@option("--https-listen-port", type=click.IntRange(1, 65535), default=6443, show_default=True,
        help="HTTPS port of the API server")
@option("--cluster-cidr", type=CIDR(), default="10.42.0.0/16", show_default=True,
        help="Network for pod IPs")
@option("--service-cidr", type=CIDR(), default="10.43.0.0/16", show_default=True,
        help="Network for service IPs")
@option("--service-node-port-range", type=PortRange(), default="30000-32767",
        show_default=True, help="Port range for NodePort services")
@option("--cluster-dns", type=IPAddress(), default="10.43.0.10", show_default=True,
        help="Service IP of cluster DNS (inside --service-cidr)")
@option("--cluster-domain", type=DNSName(), default="cluster.local", show_default=True,
        help="Cluster domain")
@option("--tls-san", multiple=True, help="Extra name or IP for the serving certificate")
@option("--max-requests-inflight", type=click.IntRange(0), default=400, show_default=True,
        help="Read requests served at once before more get 429 (0: no limit)")
@option("--max-mutating-requests-inflight", type=click.IntRange(0), default=200,
        show_default=True, help="Write requests served at once before more get 429 "
        "(0: no limit)")
@option("--authorization-mode", default="Node,RBAC", show_default=True,
        callback=lambda ctx, param, value: _authorization_mode(value),
        help="Authorizers in order (Node, RBAC, AlwaysAllow), as kube-apiserver's")
@_audit_options
@option("--disable", multiple=True, metavar="NAME",
        help="Do not deploy add-on NAME and delete it if it was (its manifest in "
             "<data-dir>/server/manifests; repeatable or comma-separated, e.g. "
             "local-storage,ingress,metrics-server)")
@option("--metric-resolution", type=Duration(), default="15s", show_default=True,
        callback=lambda ctx, param, value: _at_least_a_second(value),
        help="How often the metrics.k8s.io API (`kubectl top`) scrapes kubelets, as "
             "metrics-server's flag (e.g. 15s, 1m)")
@option("--disable-agent", is_flag=True, help="Run no agent on this host")
@_node_network_options
@option("--node-ip", "-i", type=IPAddress(), default=None,
        help="IP address to advertise for the node (default: the default route's)")
@option("--node-label", multiple=True, metavar="KEY=VALUE",
        help="Label to register the node with (repeatable)")
@option("--container-runtime-endpoint", metavar="SOCKET", default=None,
        help="CRI socket of an existing runtime instead of the agent's own containerd")
@option("--kubelet-port", type=click.IntRange(1, 65535), default=10250, show_default=True,
        help="HTTPS port of the kubelet (logs, exec, port-forward)")
@option("--disable-scheduler", is_flag=True, help="Run no scheduler in this server")
@option("--disable-controller-manager", is_flag=True,
        help="Run no controllers in this server")
@option("--horizontal-pod-autoscaler-sync-period", type=Duration(), default="15s",
        show_default=True, help="How often each HorizontalPodAutoscaler is looked at")
@option("--horizontal-pod-autoscaler-downscale-stabilization", type=Duration(),
        default="5m0s", show_default=True,
        help="Window whose highest recommendation a scale-down may not go below")
@option("--horizontal-pod-autoscaler-tolerance", type=click.FloatRange(0), default=0.1,
        show_default=True, help="Usage ratio change within which an HPA does not scale")
@option("--horizontal-pod-autoscaler-cpu-initialization-period", type=Duration(),
        default="5m0s", show_default=True,
        help="After a pod starts, the time its CPU samples may be skipped")
@option("--horizontal-pod-autoscaler-initial-readiness-delay", type=Duration(),
        default="30s", show_default=True,
        help="After a pod starts, the time its readiness changes count as initial")
@option("--write-kubeconfig", "-o", default="/etc/k8py/k8py.yaml", show_default=True,
        type=click.Path(dir_okay=False), help="Where to write the admin kubeconfig")
@option("--write-kubeconfig-mode", type=FileMode(), default="0600", show_default=True,
        help="File mode of the admin kubeconfig")
@option("--secrets-encryption", is_flag=True,
        help="Encrypt Secrets at rest with a generated AES-CBC key "
             "(<data-dir>/server/cred/encryption-config.json; see `k8py secrets-encrypt`)")
@option("--encryption-provider-config", type=click.Path(dir_okay=False), default=None,
        metavar="FILE", help="Upstream's EncryptionConfiguration file: which resources are "
        "encrypted at rest, and how (reloaded when it changes)")
@_snapshot_server_options
@option("--cluster-init", is_flag=True,
        help="Start a new cluster on an embedded etcd, this server its first member")
@option("--server", "-s", metavar="URL", default=None,
        help="Join the cluster of this server (embedded etcd), e.g. https://10.0.0.1:6443; "
             "with --token, the first server's <data-dir>/server/token")
@option("--etcd-client-port", type=click.IntRange(1, 65535), default=2379, show_default=True,
        help="Client port of the embedded etcd")
@option("--etcd-peer-port", type=click.IntRange(1, 65535), default=2380, show_default=True,
        help="Peer port of the embedded etcd")
def server(debug: bool, **flags) -> None:
    """Run the control plane (and, unless --disable-agent, an agent)."""
    from k8py.server import daemon
    from k8py.server.store import EndpointError, open_backend

    if flags["service_cidr"].version != 4:
        raise click.BadParameter(
            f"{flags['service_cidr']} is not an IPv4 network (only single-stack IPv4 is "
            "supported)", param_hint="'--service-cidr'")
    if flags["cluster_dns"] not in flags["service_cidr"]:
        raise click.BadParameter(
            f"{flags['cluster_dns']} is not inside --service-cidr {flags['service_cidr']}",
            param_hint="'--cluster-dns'",
        )
    if flags["token"] is not None and not re.fullmatch(
            r"[^\s:]+", flags["token"].rpartition("::server:")[2]):
        raise click.BadParameter("the join secret may not be empty nor hold spaces or ':'",
                                 param_hint="'--token'")
    try:
        open_backend(flags["datastore_endpoint"], flags["data_dir"],
                     cafile=flags["datastore_cafile"], certfile=flags["datastore_certfile"],
                     keyfile=flags["datastore_keyfile"])
    except (EndpointError, OSError) as exc:  # OSError: an unreadable TLS file
        raise click.BadParameter(str(exc), param_hint="'--datastore-endpoint'") from None
    _check_encryption_flags(flags)
    _check_audit_flags(flags)
    _check_embedded_etcd_flags(flags)
    cluster_reset, restore_path = flags.pop("cluster_reset"), flags.pop("cluster_reset_restore_path")
    if restore_path and not cluster_reset:
        raise click.UsageError("invalid flag use; --cluster-reset required with "
                               "--cluster-reset-restore-path")
    if cluster_reset:
        _setup_logging(debug)
        _cluster_reset(flags, restore_path)
        return
    flags["tls_san"] = tuple(flags["tls_san"])
    flags["node_label"] = _node_labels(flags["node_label"])
    flags["disable"] = tuple(name.strip() for value in flags["disable"]
                             for name in value.split(",") if name.strip())
    _setup_logging(debug)
    _run(daemon.run(daemon.ServerConfig(**flags)))


def _check_embedded_etcd_flags(flags: dict) -> None:
    """--cluster-init and --server: an embedded etcd, so no other datastore."""
    if not (flags["cluster_init"] or flags["server"]):
        return
    if flags["datastore_endpoint"]:
        raise click.UsageError("invalid flag use; cannot use --cluster-init or --server with "
                               "--datastore-endpoint")
    if flags["cluster_init"] and flags["server"]:
        raise click.UsageError("invalid flag use; --cluster-init starts a new cluster, "
                               "--server joins one: give one of them")
    if flags["server"]:
        if not flags["server"].startswith("https://"):
            raise click.BadParameter(f"{flags['server']!r} is not an https:// URL",
                                     param_hint="'--server'")
        if not flags["token"] or not flags["token"].startswith("K10"):
            raise click.UsageError("--server needs --token: the first server's full token "
                                   "(<data-dir>/server/token)")


def _new_embedded_member(flags: dict):
    """The snapshotter of the embedded etcd member a server with these flags runs, in a data
    dir that has no etcd data yet; a SQLite database left there is moved aside (it would
    otherwise be migrated over the restored objects at the next start)."""
    from k8py.server import daemon
    from k8py.server.store import DEFAULT_SQLITE_PATH, etcdsnapshot
    from k8py.server.store.snapshot import set_aside

    member = daemon.etcd_member(daemon.ServerConfig(**flags), embedded=True)
    sqlite = os.path.join(flags["data_dir"], DEFAULT_SQLITE_PATH)
    if os.path.exists(sqlite):
        log.info("The SQLite datastore was moved to %s", set_aside(sqlite))
    return etcdsnapshot.EtcdSnapshots(
        [], member=etcdsnapshot.Member(member.data_dir, member.name, member.peer_url))


def _at_least_a_second(seconds: float) -> float:
    if seconds < 1:
        raise click.BadParameter(f"{seconds:g}s is shorter than 1s")
    return seconds


def _cluster_reset(flags: dict, restore_path: str | None) -> None:
    """`server --cluster-reset [--cluster-reset-restore-path FILE]`, then exit with k3s's
    message. The datastore decides: an embedded etcd (`<data-dir>/server/db/etcd`) is reset to
    one member, or restored from the snapshot; SQLite only restores. Refused while a server
    has the datastore open."""
    from k8py.server import etcdsnapshot
    from k8py.server.store.backend import StoreError, StoreLocked
    from k8py.server.store.etcdsnapshot import embedded_member, is_snapshot_file, reset_member
    from k8py.server.store.snapshot import snapshotter

    def in_use() -> click.ClickException:
        return click.ClickException(
            f"the datastore of {flags['data_dir']} is in use by a running k8py server: "
            "stop it first (systemctl stop k8py), then reset")

    embedded = None if flags["datastore_endpoint"] else embedded_member(flags["data_dir"])
    if not restore_path:
        if embedded is None:
            raise click.UsageError("--cluster-reset resets an etcd cluster's membership; a "
                                   "single-server datastore has none: give "
                                   "--cluster-reset-restore-path to restore a snapshot")
        try:
            reset_member(embedded[0])
        except StoreLocked:
            raise in_use() from None
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
        log.info(etcdsnapshot.RESET_DONE)
        return
    directory = flags["etcd_snapshot_dir"] or etcdsnapshot.default_dir(flags["data_dir"])
    source = etcdsnapshot.restore_source(restore_path, directory)

    async def restore() -> None:
        if embedded is None and not flags["datastore_endpoint"] and is_snapshot_file(source):
            # the datastore is gone (wiped, a new host): the member this server will run
            snapshots = _new_embedded_member(flags)
        else:
            snapshots = snapshotter(flags["datastore_endpoint"], flags["data_dir"],
                                    cafile=flags["datastore_cafile"],
                                    certfile=flags["datastore_certfile"],
                                    keyfile=flags["datastore_keyfile"])
        try:
            await etcdsnapshot.restore(snapshots, source)
        except StoreLocked:
            raise in_use() from None

    _run(restore())
    log.info(etcdsnapshot.RESET_DONE)


def _authorization_mode(value: str) -> str:
    from k8py.server.apiserver.authorization import parse_modes
    try:
        return ",".join(parse_modes(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--authorization-mode: ")) from None


def _check_encryption_flags(flags: dict) -> None:
    """At most one source of encryption keys, and a user's file read and checked now, so a
    broken one is one line before anything starts."""
    from k8py.server.apiserver.encryptionconfig import ConfigError, load

    if flags["encryption_provider_config"] is None:
        return
    if flags["secrets_encryption"]:
        raise click.UsageError("--secrets-encryption and --encryption-provider-config "
                               "cannot be used together (the first generates the file the "
                               "second names)")
    try:
        load(flags["encryption_provider_config"])
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="'--encryption-provider-config'"
                                 ) from None


def _node_labels(values: tuple[str, ...]) -> tuple[str, ...]:
    """`--node-label` values, checked for the KEY=VALUE shape (the API server checks the
    label itself when the node registers)."""
    for value in values:
        key, sep, _ = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="'--node-label'")
    return tuple(values)


@cli.command(cls=ConfiguredCommand)
@_common_options
@option("--server", "-s", metavar="URL", help="Server to join, e.g. https://10.0.0.1:6443")
@option("--token-file", type=click.Path(dir_okay=False), default=None,
        help="File holding the join token (instead of --token)")
@option("--simulate", type=click.IntRange(1, 100000), default=None, metavar="N",
        help="Run N simulated nodes (no containers) instead of a real node")
@option("--kubeconfig", type=click.Path(dir_okay=False),
        help="Kubeconfig to reach the server with (instead of --server/--token)")
@option("--simulate-start-delay", type=click.FloatRange(0, 3600), default=0.2,
        show_default=True, help="Seconds a simulated pod takes to become Running")
@option("--node-ip", "-i", type=IPAddress(), default=None,
        help="IP address to advertise for the node (default: the default route's)")
@option("--node-label", multiple=True, metavar="KEY=VALUE",
        help="Label to register the node with (repeatable)")
@option("--container-runtime-endpoint", metavar="SOCKET", default=None,
        help="CRI socket of an existing runtime instead of the agent's own containerd")
@option("--cluster-dns", type=IPAddress(), default="10.43.0.10", show_default=True,
        help="Service IP of cluster DNS")
@option("--cluster-domain", type=DNSName(), default="cluster.local", show_default=True,
        help="Cluster domain")
@option("--cluster-cidr", type=CIDR(), default="10.42.0.0/16", show_default=True,
        help="Network for pod IPs (the server's --cluster-cidr)")
@_node_network_options
def agent(debug: bool, **flags) -> None:
    """Run a worker node that joins a server."""
    if not flags["kubeconfig"]:
        _check_join_flags(flags)
    if flags["simulate"]:
        _simulate(debug, flags)
        return
    if flags["kubeconfig"]:
        _agent_with_kubeconfig(debug, flags)
        return
    _agent_joined(debug, flags)


def _check_join_flags(flags: dict) -> None:
    """--server and --token, checked before anything is started (exit 2 when wrong)."""
    from k8py.agent.join import JoinError, parse_token

    if not flags["server"]:
        raise click.UsageError("missing option '--server' (or K8PY_SERVER; or --kubeconfig)")
    if not flags["server"].startswith("https://"):
        raise click.BadParameter(f"{flags['server']!r} is not an https:// URL",
                                 param_hint="'--server'")
    if not flags["token"] and flags["token_file"]:
        try:
            with open(flags["token_file"], encoding="utf-8") as f:
                flags["token"] = f.read().strip()
        except OSError as exc:
            raise click.BadParameter(f"{flags['token_file']}: {exc.strerror}",
                                     param_hint="'--token-file'") from None
    if not flags["token"]:
        raise click.UsageError("missing option '--token' (or K8PY_TOKEN)")
    try:
        parse_token(flags["token"])
    except JoinError as exc:
        raise click.BadParameter(str(exc), param_hint="'--token'") from None


async def _join(flags: dict, node_name: str, addresses: tuple[str, ...] = (),
                hostnames: tuple[str, ...] = (), tls_dir: str | None = None, servers=None):
    """The node credentials from --server with --token (`k8py.agent.join`), kept in
    `tls_dir` (default `<data-dir>/agent/tls`); with `servers`, from any of them."""
    import os

    from k8py.agent.join import JoinError, join

    try:
        return await join(flags["server"], flags["token"],
                          tls_dir or os.path.join(flags["data_dir"], "agent", "tls"),
                          node_name, addresses, hostnames, servers=servers)
    except JoinError as exc:
        raise click.ClickException(str(exc)) from None


def _agent_joined(debug: bool, flags: dict) -> None:
    """`k8py agent --server URL --token TOKEN`: join (`k8py.agent.join`), then run this host
    as a node with the issued client certificate; the kubelet server uses the issued serving
    certificate, so logs, exec and port-forward work through the API server."""
    from k8py.agent import daemon as agent_daemon
    from k8py.api.meta import DNS1123_SUBDOMAIN
    from k8py.client.client import Client

    config = _agent_config(flags)
    hostname = socket.gethostname().lower()
    hostnames = (hostname,) if DNS1123_SUBDOMAIN.match(hostname) else ()
    _setup_logging(debug)

    async def run() -> None:
        from k8py.agent import apiservers
        from k8py.agent.certrotation import Rotation

        # every API server, learned from the kubernetes endpoints (`k8py.agent.apiservers`):
        # one list for the join, the node's, the rotation's and the ingress token's requests
        servers = apiservers.server_list(flags["server"], flags["data_dir"])
        credentials = await _join(flags, config.node_name, (config.node_ip,), hostnames,
                                  servers=servers)
        node_config = dataclasses.replace(
            config, tls_cert=credentials.serving_cert, tls_key=credentials.serving_key,
            client_ca=credentials.ca_cert)
        transport = credentials.transport(flags["server"], servers=servers)
        client = Client(transport, field_manager="k8py-kubelet")
        following = asyncio.create_task(apiservers.follow(client, transport))
        # the kubelet's certificates renewed while it runs (`k8py.agent.certrotation`)
        renewing = asyncio.create_task(Rotation(
            credentials, client, transport, config.node_name,
            addresses=(config.node_ip,), hostnames=hostnames,
            password_file=os.path.join(config.agent_dir, "node-password")).run())
        # TLS Secrets for the ingress: the k8py-ingress account's token, bound to this node
        from k8py.agent.ingresstoken import IngressToken

        ingress_token = IngressToken(client, config.node_name, flags["server"].rstrip("/"),
                                     credentials.ca_cert, servers=servers)
        try:
            await _agent_notifying(agent_daemon, node_config, client, ingress_token)
        finally:
            renewing.cancel()
            following.cancel()
            await asyncio.gather(renewing, following, return_exceptions=True)
            await client.close()

    _run(run())


async def _agent_notifying(agent_daemon, config, client, ingress_token=None) -> None:
    """Run the agent; tell the service manager (k8py-agent.service is Type=notify) once it
    is ready."""
    from k8py.lifecycle import notify_service_manager

    ready = asyncio.Event()

    async def notify() -> None:
        await ready.wait()
        notify_service_manager("READY=1")
    notifier = asyncio.create_task(notify())
    try:
        await agent_daemon.run(config, client, ready, ingress_token=ingress_token)
    finally:
        notifier.cancel()


def _agent_config(flags: dict):
    from k8py.agent.config import agent_config

    return agent_config(
        data_dir=flags["data_dir"], node_name=flags["node_name"] or "",
        node_ip=str(flags["node_ip"]) if flags["node_ip"] else "",
        cluster_dns=str(flags["cluster_dns"]), cluster_domain=flags["cluster_domain"],
        container_runtime_endpoint=flags["container_runtime_endpoint"],
        node_labels=_node_labels(flags["node_label"]),
        cluster_cidr=str(flags["cluster_cidr"]), service_proxy=not flags["disable_kube_proxy"],
        network_policy=not flags["disable_network_policy"],
        flannel_backend=flags["flannel_backend"], flannel_iface=flags["flannel_iface"],
        resolv_conf=flags["resolv_conf"], ingress=not flags["disable_ingress"],
        ingress_http_port=flags["ingress_http_port"],
        ingress_https_port=flags["ingress_https_port"])


def _agent_with_kubeconfig(debug: bool, flags: dict) -> None:
    """`k8py agent --kubeconfig FILE`: this host as a node of the server the kubeconfig
    names, with that kubeconfig's credentials. No kubelet certificate comes with it, so such
    a node serves no logs, exec or port-forward (join with --server/--token for those)."""
    from k8py.agent import daemon as agent_daemon
    from k8py.client.client import Client

    config = _agent_config(flags)
    transport = _kubeconfig_transport(flags["kubeconfig"], "k8py-kubelet")
    _setup_logging(debug)

    async def run() -> None:
        client = Client(transport, field_manager="k8py-kubelet")
        try:
            await _agent_notifying(agent_daemon, config, client)
        finally:
            await client.close()

    _run(run())


def _kubeconfig_transport(path: str, user_agent: str):
    from k8py.client.http import HttpTransport, KubeconfigError

    try:
        return HttpTransport.from_kubeconfig(path, user_agent=user_agent)
    except (KubeconfigError, OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--kubeconfig'") from None


def _simulate(debug: bool, flags: dict) -> None:
    """`k8py agent --simulate N`: simulated nodes, each its own node identity (the Node
    authorizer and NodeRestriction apply to it as to a kubelet): with a kubeconfig, its
    credentials impersonating `system:node:<name>` (they must be allowed to, as the admin's
    are); with --server/--token, each node joins and uses its own client certificate (kept
    in `<data-dir>/agent/simulated/<name>/tls`)."""
    from k8py.agent.simulated import SimulatedNodes
    from k8py.client.client import Client

    prefix = flags["node_name"] or "node"
    transport = (_kubeconfig_transport(flags["kubeconfig"], "k8py-simulated-nodes")
                 if flags["kubeconfig"] else None)
    _setup_logging(debug)

    async def simulate() -> None:
        import os

        names = [f"sim-{prefix}-{i}" for i in range(flags["simulate"])]
        clients: dict[str, Client] = {}
        if transport is not None:
            for name in names:
                clients[name] = Client(transport.acting_as(f"system:node:{name}",
                                                           ("system:nodes",)),
                                       field_manager="k8py-simulated-nodes")
        else:
            for name in names:
                credentials = await _join(flags, name, tls_dir=os.path.join(
                    flags["data_dir"], "agent", "simulated", name, "tls"))
                clients[name] = Client(credentials.transport(
                    flags["server"], "k8py-simulated-nodes"),
                    field_manager="k8py-simulated-nodes")
        first = clients[names[0]]
        nodes = SimulatedNodes(first, flags["simulate"], prefix=prefix,
                               start_delay=flags["simulate_start_delay"],
                               client_for=clients.__getitem__)
        try:
            await nodes.run()
        finally:
            for client in clients.values():
                await client.close()
            if transport is not None:
                await transport.close()

    _run(simulate())


@cli.group()
def images() -> None:
    """Import, list and remove the node's images (containerd's k8s.io namespace)."""


def _runtime_options(f):
    f = option("--container-runtime-endpoint", metavar="SOCKET",
               help="CRI socket of an existing runtime (default: the agent's containerd)")(f)
    return option("--data-dir", "-d", default="/var/lib/k8py", show_default=True,
                  type=click.Path(file_okay=False), help="Folder holding the agent's state")(f)


def _images_call(flags: dict, action) -> None:
    """Run `action(cri, socket)` against the node's runtime; failures are one line. An
    action that reported its own errors returns False: exit code 1."""
    from k8py.agent.containerd import socket_path
    from k8py.runtime.cri import CriClient, CriError
    from k8py.runtime.images import ImageError

    try:
        sock = socket_path(flags["data_dir"], flags["container_runtime_endpoint"])
    except ValueError as exc:
        raise click.BadParameter(str(exc),
                                 param_hint="'--container-runtime-endpoint'") from None

    async def run() -> bool | None:
        async with CriClient(sock, timeout=60) as cri:
            return await action(cri, sock)

    try:
        if asyncio.run(run()) is False:
            sys.exit(1)
    except CriError as exc:
        if exc.status.name == "UNAVAILABLE":
            raise click.ClickException(f"cannot reach containerd at {sock}: is the agent "
                                       "running?") from None
        raise click.ClickException(exc.message or str(exc)) from None
    except ImageError as exc:
        raise click.ClickException(str(exc)) from None


@images.command("import")
@_runtime_options
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def images_import(files: tuple[str, ...], **flags) -> None:
    """Import image archives (OCI layout or docker archive; plain, .gz or .zst)."""
    from k8py.runtime.images import ImageError, import_archive

    async def action(cri, sock) -> bool:
        failed = []
        for path in files:
            try:
                refs = await import_archive(path, sock)
            except ImageError as exc:
                click.echo(f"k8py: error: {path}: {exc}", err=True)
                failed.append(path)
                continue
            click.echo(f"imported {', '.join(refs) or 'an unnamed image'} from {path}")
        return not failed

    _images_call(flags, action)


@images.command("ls")
@_runtime_options
@click.option("--quiet", "-q", is_flag=True, help="Only print image references")
def images_ls(quiet: bool, **flags) -> None:
    """List the images the runtime has."""
    async def action(cri, sock) -> None:
        rows = []
        for image in await cri.list_images():
            for ref in list(image.repo_tags) or list(image.repo_digests) or ["<none>"]:
                rows.append((ref, image.id.removeprefix("sha256:")[:12],
                             _size(image.size)))
        rows.sort()
        if quiet:
            for ref, _, _ in rows:
                click.echo(ref)
            return
        width = max([len("IMAGE")] + [len(r[0]) for r in rows])
        click.echo(f"{'IMAGE':<{width}}  {'IMAGE ID':<12}  SIZE")
        for ref, image_id, size in rows:
            click.echo(f"{ref:<{width}}  {image_id:<12}  {size}")

    _images_call(flags, action)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return ""


@images.command("rm")
@_runtime_options
@click.argument("refs", nargs=-1, required=True)
def images_rm(refs: tuple[str, ...], **flags) -> None:
    """Remove images by reference or id."""
    from k8py.runtime.cri import CriError

    async def action(cri, sock) -> bool:
        failed = False
        for ref in refs:
            if await cri.image_status(ref) is None:
                click.echo(f"k8py: error: no such image: {ref}", err=True)
                failed = True
                continue
            try:
                await cri.remove_image(ref)
            except CriError as exc:
                if exc.status.name == "UNAVAILABLE":
                    raise
                click.echo(f"k8py: error: {ref}: {exc.message or exc}", err=True)
                failed = True
                continue
            click.echo(f"deleted {ref}")
        return not failed

    _images_call(flags, action)


@images.command("build-busybox")
@_runtime_options
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write the OCI archive here instead of importing it")
@click.option("--name", default="k8py.local/busybox:latest", show_default=True,
              help="Image reference")
@click.option("--busybox", default="/bin/busybox", show_default=True,
              type=click.Path(dir_okay=False), help="Static busybox binary to use")
def images_build_busybox(output: str | None, name: str, busybox: str, **flags) -> None:
    """Build a small image from the host's busybox (for tests and demos)."""
    from k8py.runtime.images import ImageError, build_busybox_image, import_bytes, normalize_ref

    try:
        data = build_busybox_image(busybox, name=normalize_ref(name))
    except ImageError as exc:
        raise click.ClickException(str(exc)) from None
    if output:
        try:
            with open(output, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise click.ClickException(f"{output}: {exc.strerror}") from None
        click.echo(f"wrote {normalize_ref(name)} to {output}")
        return

    async def action(cri, sock) -> None:
        refs = await import_bytes(data, sock)
        click.echo(f"imported {', '.join(refs)}")

    _images_call(flags, action)


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(coroutine) -> None:
    """Run a daemon; its known failures become one line and exit code 1."""
    from k8py.agent.join import JoinError
    from k8py.server.apiserver.encryptionconfig import ConfigError
    from k8py.server.embeddedetcd import EtcdError
    from k8py.server.store.backend import StoreError

    try:
        asyncio.run(coroutine)
    except (StoreError, ConfigError, JoinError, EtcdError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.strerror}: {exc.filename}" if exc.filename
                                   else str(exc)) from None


@cli.group()
def token() -> None:
    """Extra join tokens for agents (bootstrap tokens): create, list, delete."""


_KUBECONFIG = click.option("--kubeconfig", envvar="KUBECONFIG", default="/etc/k8py/k8py.yaml",
                           show_default=True, type=click.Path(dir_okay=False),
                           help="An admin kubeconfig of the server")


def _token_call(kubeconfig: str, action):
    """Run `action(client, ca_pem)` against the server the kubeconfig names."""
    import ssl

    import aiohttp

    from k8py.client.client import Client
    from k8py.client.http import HttpTransport, KubeconfigError, load_kubeconfig

    try:
        server, tls, _ = load_kubeconfig(kubeconfig)
        transport = HttpTransport.from_kubeconfig(kubeconfig, user_agent="k8py-token")
    except KubeconfigError as exc:
        raise click.ClickException(str(exc)) from None

    async def run():
        client = Client(transport)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
                async with http.get(server.rstrip("/") + "/cacerts") as response:
                    ca_pem = await response.read()
            return await action(client, ca_pem)
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise click.ClickException(f"cannot reach the server at {server}: {exc}") from None
        finally:
            await client.close()
    return asyncio.run(run())


@token.command("create")
@_KUBECONFIG
@click.option("--ttl", default="24h", show_default=True,
              help="How long the token joins agents (e.g. 2h, 30m; 0: never expires)")
@click.option("--description", default="", help="What the token is for")
def token_create(kubeconfig: str, ttl: str, description: str) -> None:
    """Create a join token and print it (K10<CA hash>::<id>.<secret>)."""
    from k8py import jointokens

    try:
        duration = jointokens.parse_ttl(ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--ttl'") from None
    click.echo(_token_call(kubeconfig, lambda client, ca: jointokens.create(
        client, ca, duration, description)))


@token.command("list")
@_KUBECONFIG
def token_list(kubeconfig: str) -> None:
    """The join tokens: id, expiry, usages, description."""
    from k8py import jointokens

    tokens = _token_call(kubeconfig, lambda client, ca: jointokens.listed(client))
    click.echo(f"{'TOKEN':<8} {'EXPIRES':<22} {'USAGES':<28} DESCRIPTION")
    for item in tokens:
        click.echo(f"{item['id']:<8} {item['expires'] or '<never>':<22} "
                   f"{item['usages']:<28} {item['description']}")


@token.command("delete")
@_KUBECONFIG
@click.argument("token_ids", nargs=-1, required=True, metavar="ID...")
def token_delete(kubeconfig: str, token_ids: tuple[str, ...]) -> None:
    """Delete join tokens by id; agents can no longer join with them."""
    from k8py import jointokens

    async def delete_all(client, ca):
        return [(token_id, await jointokens.delete(client, token_id))
                for token_id in token_ids]
    for token_id, existed in _token_call(kubeconfig, delete_all):
        if not existed:
            raise click.ClickException(f"no token {token_id!r}")
        click.echo(f"bootstrap token {token_id!r} deleted")


@cli.group()
def certificate() -> None:
    """Check and rotate the certificates of a data directory (k3s's commands)."""


_CERT_DATA_DIR = click.option("--data-dir", "-d", envvar="K8PY_DATA_DIR",
                              default="/var/lib/k8py", show_default=True,
                              type=click.Path(file_okay=False), help="Folder holding the state")


def _services(values: tuple[str, ...], allowed: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if value not in allowed:
            raise click.BadParameter(f"{value!r} is not one of {', '.join(allowed)}",
                                     param_hint="'--service'")
    return values or allowed


def _stopped(data_dir: str) -> None:
    """Changing certificate files under a running k8py would pull them from under it."""
    from k8py import hostcleanup

    running = hostcleanup.k8py_processes(data_dir)
    if running:
        raise click.ClickException(
            f"k8py is running with {data_dir} (pid {', '.join(map(str, running))}): stop it "
            "first (systemctl stop k8py); new certificates are issued when it starts")


@certificate.command("check")
@_CERT_DATA_DIR
@click.option("--output", "-o", type=click.Choice(["text", "table", "json"]), default="text",
              show_default=True, help="Output format")
@click.option("--service", "-s", multiple=True, help="Only these services' certificates "
              "(ca, admin, api-server, kubelet; repeatable)")
def certificate_check(data_dir: str, output: str, service: tuple[str, ...]) -> None:
    """Every certificate file: subject, usages, expiry and status."""
    import json

    from k8py import certificates
    from k8py.server import certfiles

    now = certificates.now()
    found = certfiles.check(data_dir, _services(service, certfiles.SERVICES), now)
    if not found:
        raise click.ClickException(f"no certificates under {data_dir}")
    if output == "json":
        click.echo(json.dumps({"Certificates": [
            {"Filename": c.filename, "Subject": c.subject, "Issuer": c.issuer,
             "Usages": list(c.usages),
             "ExpiryTime": (c.not_before if c.status == "NOT YET VALID"
                            else c.not_after).isoformat(),
             "ResidualTime": int((c.not_after - now).total_seconds()), "Status": c.status}
            for c in found]}, indent=2))
        return
    if output == "table":
        rows = [("FILENAME", "SUBJECT", "USAGES", "EXPIRES", "RESIDUAL TIME", "STATUS"),
                ("--------", "-------", "------", "-------", "-------------", "------")]
        rows += [(c.filename, c.subject, ",".join(c.usages),
                  c.not_after.strftime("%b %d, %Y %H:%M UTC"),
                  _residual(c.not_after - now), c.status) for c in found]
        widths = [max(len(row[i]) for row in rows) for i in range(6)]
        for row in rows:
            click.echo("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        return
    for c in found:
        usage, at = ",".join(c.usages), c.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        click.echo({
            "NOT YET VALID": f"{c.filename}: certificate {c.subject} ({usage}) is not valid "
                             f"before {c.not_before.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            "EXPIRED": f"{c.filename}: certificate {c.subject} ({usage}) expired at {at}",
            "WARNING": f"{c.filename}: certificate {c.subject} ({usage}) will expire soon, "
                       f"at {at}",
        }.get(c.status, f"{c.filename}: certificate {c.subject} ({usage}) is ok, expires at "
                        f"{at}"))


def _residual(left) -> str:
    seconds = int(left.total_seconds())
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    for unit, size in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{sign}{seconds // size}{unit}"
    return f"{sign}{seconds}s"


@certificate.command("rotate")
@_CERT_DATA_DIR
@click.option("--service", "-s", multiple=True,
              help="Only these services (admin, api-server, kubelet; repeatable)")
def certificate_rotate(data_dir: str, service: tuple[str, ...]) -> None:
    """Renew leaf certificates: back them up and remove them; k8py, stopped, issues new
    ones when it starts."""
    from k8py.server import certfiles

    services = _services(service, certfiles.ROTATABLE)
    _stopped(data_dir)
    backups = certfiles.rotate(data_dir, services)
    click.echo(f"certificates of {', '.join(services)} backed up to {', '.join(backups)} "
               "and removed: start k8py server or agent to issue new ones")


@certificate.command("rotate-ca")
@_CERT_DATA_DIR
@click.option("--finish", is_flag=True,
              help="End the rotation: trust only the new CA (every agent must have renewed)")
def certificate_rotate_ca(data_dir: str, finish: bool) -> None:
    """Replace the cluster CA, with an overlap: the new CA signs, both are trusted until
    --finish."""
    from k8py.server import certfiles

    _stopped(data_dir)
    try:
        backup = (certfiles.finish_ca_rotation if finish else certfiles.rotate_ca)(data_dir)
    except certfiles.CertificateError as exc:
        raise click.ClickException(str(exc)) from None
    if finish:
        click.echo(f"the previous CA is no longer trusted (backup in {backup}); start k8py "
                   "server")
    else:
        click.echo(f"new cluster CA; the previous one stays trusted until `k8py certificate "
                   f"rotate-ca --finish` (backup in {backup}). Start k8py server; agents "
                   "take the new CA bundle and renew from it; the join token's CA hash "
                   "changed (<data-dir>/server/token)")


cli.add_command(secretsencrypt.command)
cli.add_command(etcdmember.command)


class _SnapshotCommands(click.Group):
    """k3s's aliases of `ls`: `list` and `l`."""

    def get_command(self, ctx, name):
        return super().get_command(ctx, {"list": "ls", "l": "ls"}.get(name, name))


@cli.group("etcd-snapshot", cls=_SnapshotCommands)
def etcd_snapshot() -> None:
    """Datastore snapshots: save, ls, delete, prune (k3s's commands). They read the database
    file directly (SQLite's online backup), so they work beside a running server."""


def _snapshot_options(f):
    for decorator in reversed([
        click.option("--data-dir", "-d", envvar="K8PY_DATA_DIR", default="/var/lib/k8py",
                     show_default=True, type=click.Path(file_okay=False),
                     help="Folder holding the state"),
        click.option("--datastore-endpoint", envvar="K8PY_DATASTORE_ENDPOINT", default="",
                     metavar="URL", help="The server's datastore (default: the data dir's "
                     "embedded etcd, else SQLite under it)"),
        click.option("--datastore-cafile", envvar="K8PY_DATASTORE_CAFILE", default=None,
                     metavar="FILE", help="CA of an etcd datastore's TLS"),
        click.option("--datastore-certfile", envvar="K8PY_DATASTORE_CERTFILE", default=None,
                     metavar="FILE", help="Client certificate for an etcd datastore"),
        click.option("--datastore-keyfile", envvar="K8PY_DATASTORE_KEYFILE", default=None,
                     metavar="FILE", help="Client key for an etcd datastore"),
        click.option("--node-name", envvar="K8PY_NODE_NAME", default=None,
                     help="Node name in snapshot names (default: the hostname)"),
        click.option("--dir", "--etcd-snapshot-dir", "directory", default=None, metavar="DIR",
                     help="Snapshot directory (default <data-dir>/server/db/snapshots)"),
        click.option("--name", default="on-demand", show_default=True,
                     help="Base name of the snapshot (-<node>-<unix time> is appended)"),
        click.option("--debug", is_flag=True, help="Log at debug level"),
    ]):
        f = decorator(f)
    return f


def _snapshot_dir(data_dir: str, directory: str | None) -> str:
    from k8py.server import etcdsnapshot

    return os.path.abspath(directory or etcdsnapshot.default_dir(data_dir))


@etcd_snapshot.command("save")
@_snapshot_options
def etcd_snapshot_save(data_dir, datastore_endpoint, datastore_cafile, datastore_certfile,
                       datastore_keyfile, node_name, directory, name, debug) -> None:
    """Take a snapshot now."""
    from k8py.server import etcdsnapshot
    from k8py.server.store.snapshot import snapshotter

    _setup_logging(debug)

    async def save() -> None:
        taken, revision = await etcdsnapshot.save(
            snapshotter(datastore_endpoint, data_dir, cafile=datastore_cafile,
                        certfile=datastore_certfile, keyfile=datastore_keyfile),
            _snapshot_dir(data_dir, directory),
            name, etcdsnapshot.node_name(node_name))
        log.info("Snapshot %s saved at revision %d (%d bytes)", taken.name, revision,
                 taken.size)

    _run(save())


@etcd_snapshot.command("ls")
@_snapshot_options
@click.option("--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table",
              show_default=True, help="List format")
def etcd_snapshot_ls(data_dir, datastore_endpoint, datastore_cafile, datastore_certfile,
                     datastore_keyfile, node_name, directory, name, debug,
                     output) -> None:
    """List snapshots (Name, Location, Size, Created)."""
    import datetime
    import json

    import yaml

    from k8py.server import etcdsnapshot

    found = etcdsnapshot.list_snapshots(_snapshot_dir(data_dir, directory))

    def created(snapshot) -> str:
        moment = datetime.datetime.fromtimestamp(snapshot.created, etcdsnapshot.local_zone())
        text = moment.isoformat(timespec="seconds")
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    if output != "table":
        node = etcdsnapshot.node_name(node_name)
        listing = {"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "k3s.cattle.io/v1", "kind": "ETCDSnapshotFile",
             "metadata": {"name": s.name},
             "spec": {"snapshotName": s.name, "nodeName": node, "location": s.location},
             "status": {"size": str(s.size), "creationTime": created(s), "readyToUse": True}}
            for s in found]}
        click.echo(json.dumps(listing) if output == "json"
                   else yaml.safe_dump(listing, sort_keys=False), nl=output == "json")
        return
    rows = [("Name", "Location", "Size", "Created")]
    rows += [(s.name, s.location, str(s.size), created(s)) for s in found]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:  # Go's tabwriter (padding 1) as k3s prints it
        click.echo("".join(cell.ljust(w + 1) for cell, w in zip(row, widths)) + row[3])


@etcd_snapshot.command("delete")
@_snapshot_options
@click.argument("snapshots", nargs=-1)
def etcd_snapshot_delete(data_dir, datastore_endpoint, datastore_cafile, datastore_certfile,
                         datastore_keyfile, node_name, directory, name, debug,
                         snapshots) -> None:
    """Delete the named snapshots."""
    from k8py.server import etcdsnapshot

    _setup_logging(debug)
    if not snapshots:
        raise click.UsageError("no snapshots given for removal")
    deleted, missing = etcdsnapshot.delete(_snapshot_dir(data_dir, directory), list(snapshots))
    for snapshot in deleted:
        log.info("Snapshot %s deleted locally", snapshot)
    for snapshot in missing:
        log.info("Snapshot %s not found locally", snapshot)


@etcd_snapshot.command("prune")
@_snapshot_options
@click.option("--snapshot-retention", type=click.IntRange(0), default=5, show_default=True,
              help="Number of snapshots to retain (of those named --name)")
def etcd_snapshot_prune(data_dir, datastore_endpoint, datastore_cafile, datastore_certfile,
                        datastore_keyfile, node_name, directory, name, debug,
                        snapshot_retention) -> None:
    """Remove the oldest snapshots named --name beyond --snapshot-retention."""
    from k8py.server import etcdsnapshot

    _setup_logging(debug)
    path = _snapshot_dir(data_dir, directory)
    log.info("Applying snapshot retention=%d to local snapshots with prefix %s in %s",
             snapshot_retention, name, path)
    etcdsnapshot.prune(path, name, snapshot_retention)


@cli.command()
@click.option("--data-dir", "-d", default="/var/lib/k8py", show_default=True,
              type=click.Path(file_okay=False), help="The data directory of the k8py to stop")
def killall(data_dir: str) -> None:
    """Stop k8py and every pod it started: processes, mounts, cgroups, its links, routes
    and nftables tables (what k8py-killall.sh runs). The data stays: starting k8py again
    brings the pods back."""
    from k8py import hostcleanup

    if os.geteuid() != 0:
        raise click.ClickException("killall needs root")
    hostcleanup.killall(data_dir, progress=lambda line: click.echo(f"killall: {line}"))


@cli.group()
def lab() -> None:
    """A multi-node cluster on this host: a server and agents in network namespaces."""


_LAB_NAME = click.option("--name", default="default", show_default=True, help="Lab name")


def _lab(name: str):
    from k8py.lab import Lab

    if os.geteuid() != 0:
        raise click.ClickException("k8py lab needs root (namespaces, links, containerd)")
    return _lab_errors(lambda: Lab(name))


def _lab_errors(action):
    from k8py.lab import LabError

    try:
        return action()
    except LabError as exc:
        raise click.ClickException(str(exc)) from None


@lab.command("up")
@_LAB_NAME
@click.option("--agents", type=click.IntRange(0, 20), default=2, show_default=True,
              help="Agents besides the server")
@click.option("--servers", type=click.IntRange(1, 9), default=1, show_default=True,
              help="Servers; more than 1: an embedded etcd cluster (server-1 --cluster-init, "
                   "the others join it)")
@click.option("--flannel-backend", type=click.Choice(["vxlan", "host-gw"]), default="vxlan",
              show_default=True, help="How pods reach pods on other nodes")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="A directory of image archives to import into every node")
@click.option("--resolv-conf", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The nodes' upstream resolvers (default: the host's /etc/resolv.conf)")
def lab_up(name: str, agents: int, servers: int, flannel_backend: str, images: str | None,
           resolv_conf: str | None) -> None:
    """Start a lab: SERVERS servers and AGENTS agents; prints its kubeconfig."""
    current = _lab(name)
    _lab_errors(lambda: current.up(agents, flannel_backend, images,
                                   progress=lambda line: click.echo(line, err=True),
                                   resolv_conf=resolv_conf, servers=servers))
    click.echo(current.kubeconfig)


@lab.command("status")
@_LAB_NAME
def lab_status(name: str) -> None:
    """The lab's nodes, their addresses and whether they run."""
    rows = _lab_errors(_lab(name).status)
    click.echo(f"{'NODE':<12} {'ROLE':<8} {'ADDRESS':<15} {'RUNNING':<8} NETWORK")
    for node, role, address, alive, isolated in rows:
        click.echo(f"{node:<12} {role:<8} {address:<15} {'yes' if alive else 'no':<8} "
                   f"{'isolated' if isolated else 'connected'}")


def _lab_node_command(verb: str, action: str, help_text: str) -> None:
    @lab.command(verb, help=help_text)
    @_LAB_NAME
    @click.argument("node")
    def command(name: str, node: str) -> None:
        _lab_errors(lambda: getattr(_lab(name), action)(node))


_lab_node_command("stop", "stop", "Stop NODE's k8py process (SIGTERM; its pods keep running).")
_lab_node_command("kill", "kill", "Kill NODE's k8py process and its etcd (SIGKILL, as a crash; "
                  "its pods' shims stay).")
_lab_node_command("start", "start", "Start NODE's k8py process again, with the same flags.")
_lab_node_command("isolate", "isolate", "Cut NODE off the lab's network (its bridge port down).")
_lab_node_command("rejoin", "rejoin", "Connect an isolated NODE to the lab's network again.")


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@_LAB_NAME
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_exec(name: str, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in NODE's network namespace: k8py lab exec agent-1 -- ip route."""
    argv = _lab_errors(lambda: _lab(name).exec_command(node, list(command)))
    os.execvp(argv[0], argv)


@lab.command("load")
@_LAB_NAME
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def lab_load(name: str, files: tuple[str, ...]) -> None:
    """Import image archives into every node of the lab."""
    _lab_errors(lambda: _lab(name).load_images(list(files)))


@lab.command("down")
@_LAB_NAME
def lab_down(name: str) -> None:
    """Stop the lab and leave the host as it was."""
    _lab_errors(lambda: _lab(name).down(progress=lambda line: click.echo(line, err=True)))


def main() -> None:
    """Entry point: click's own error output is several lines; ours is one."""
    use_one_malloc_arena()
    try:
        cli.main(prog_name="k8py", standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "k8py"
        click.echo(f"{command}: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"k8py: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
