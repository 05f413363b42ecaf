"""The `k8py` command: `k8py server`, `k8py agent`, `k8py --version`.

Flags follow k3s's names. Every flag can also come from `K8PY_<FLAG>` or the config file (see
`k8py.config`). Usage errors are one line naming the flag or key, with exit code 2; runtime
errors (an unusable database, a locked data dir) are one line with exit code 1. Never a
traceback for the operator's mistakes.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from k8py import KUBERNETES_VERSION, __version__
from k8py.config import (CIDR, ConfiguredCommand, DNSName, FileMode, IPAddress, PortRange,
                         option)
from k8py.lifecycle import use_one_malloc_arena

log = logging.getLogger("k8py")


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
        help="Datastore URL: sqlite:///path, sqlite:// (default, under the data dir), memory://")
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
@option("--disable-agent", is_flag=True, help="Run no agent on this host")
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
@option("--write-kubeconfig", "-o", default="/etc/k8py/k8py.yaml", show_default=True,
        type=click.Path(dir_okay=False), help="Where to write the admin kubeconfig")
@option("--write-kubeconfig-mode", type=FileMode(), default="0600", show_default=True,
        help="File mode of the admin kubeconfig")
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
    try:
        open_backend(flags["datastore_endpoint"], flags["data_dir"])
    except EndpointError as exc:
        raise click.BadParameter(str(exc), param_hint="'--datastore-endpoint'") from None
    flags["tls_san"] = tuple(flags["tls_san"])
    flags["node_label"] = _node_labels(flags["node_label"])
    _setup_logging(debug)
    _run(daemon.run(daemon.ServerConfig(**flags)))


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
@option("--simulate", type=click.IntRange(1, 100000), default=None, metavar="N",
        help="Run N simulated nodes (no containers) instead of a real node")
@option("--kubeconfig", type=click.Path(dir_okay=False),
        help="Kubeconfig to reach the server with (for --simulate)")
@option("--simulate-start-delay", type=click.FloatRange(0, 3600), default=0.2,
        show_default=True, help="Seconds a simulated pod takes to become Running")
def agent(debug: bool, **flags) -> None:
    """Run a worker node that joins a server."""
    if flags["simulate"]:
        _simulate(debug, flags)
        return
    if not flags["server"]:
        raise click.UsageError("missing option '--server' (or K8PY_SERVER)")
    if not flags["token"]:
        raise click.UsageError("missing option '--token' (or K8PY_TOKEN)")
    raise click.ClickException("the agent is not built yet in this version of k8py")


def _simulate(debug: bool, flags: dict) -> None:
    """`k8py agent --simulate N`: simulated nodes, through a kubeconfig's credentials."""
    from k8py.agent.simulated import SimulatedNodes
    from k8py.client.client import Client
    from k8py.client.http import HttpTransport, KubeconfigError

    if not flags["kubeconfig"]:
        raise click.UsageError("--simulate needs --kubeconfig (the admin kubeconfig the "
                               "server wrote)")
    try:
        transport = HttpTransport.from_kubeconfig(flags["kubeconfig"],
                                                  user_agent="k8py-simulated-nodes")
    except (KubeconfigError, OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--kubeconfig'") from None
    _setup_logging(debug)

    async def simulate() -> None:
        client = Client(transport, field_manager="k8py-simulated-nodes")
        nodes = SimulatedNodes(client, flags["simulate"], prefix=flags["node_name"] or "node",
                               start_delay=flags["simulate_start_delay"])
        try:
            await nodes.run()
        finally:
            await client.close()

    _run(simulate())


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(coroutine) -> None:
    """Run a daemon; its known failures become one line and exit code 1."""
    from k8py.server.store.backend import StoreError

    try:
        asyncio.run(coroutine)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.strerror}: {exc.filename}" if exc.filename
                                   else str(exc)) from None


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
