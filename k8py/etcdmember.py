"""`k8py etcd member list | remove NAME`: the embedded etcd's membership, from a server's host.

The commands talk to the local member (`<data-dir>/server/db/etcd/config`, written
by the running server) with the server's etcd client certificate (`server/tls/etcd/`), so they
need the data dir (root's, like the server's) and no kubeconfig. `list` prints etcdctl's
columns (ID, STATUS, NAME, PEER ADDRS, CLIENT ADDRS, IS LEARNER); `remove NAME` removes the
member of that name (a server taken out for good: its etcd stops, its data cannot rejoin).
Deleting the server's Node does the same (`k8py.server.etcdmembers`). Errors are one line,
exit code 1. The store modules are imported only when a command runs.
"""

from __future__ import annotations

import asyncio
import os

import click


def _client(data_dir: str):
    from k8py.server import etcdpki
    from k8py.server.embeddedetcd import read_member_file
    from k8py.server.store.etcdclient import EtcdClient, parse_endpoints

    try:
        member = read_member_file(os.path.join(data_dir, "server", "db"))
    except (OSError, ValueError):
        raise click.ClickException(f"no embedded etcd member in {data_dir} (a server started "
                                   "with --cluster-init or --server writes one)") from None
    certs = etcdpki.paths(data_dir)
    cert, key = certs.client_cert
    try:
        return EtcdClient(parse_endpoints(member["localClientURL"]), cafile=certs.server_ca,
                          certfile=cert, keyfile=key, retry_for=5.0)
    except OSError as exc:
        raise click.ClickException(f"{exc.strerror}: {exc.filename}") from None


def _call(data_dir: str, action):
    from k8py.server.store.backend import StoreError

    async def run():
        client = _client(data_dir)
        try:
            return await action(client)
        finally:
            client.close()
    try:
        return asyncio.run(run())
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("etcd")
def command() -> None:
    """The embedded etcd (servers started with --cluster-init or --server)."""


@command.group()
def member() -> None:
    """Members of the embedded etcd cluster: list, remove."""


_data_dir = click.option("--data-dir", "-d", envvar="K8PY_DATA_DIR", default="/var/lib/k8py",
                         show_default=True, type=click.Path(file_okay=False),
                         help="The server's data dir")


@member.command("list")
@_data_dir
def member_list(data_dir: str) -> None:
    """Print the members, as `etcdctl member list -w table`'s columns."""
    members = _call(data_dir, lambda client: client.member_list())
    rows = [("ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER")]
    for m in members:
        rows.append((f"{m.ID:x}", "started" if m.name else "unstarted", m.name,
                     ",".join(m.peerURLs), ",".join(m.clientURLs), str(m.isLearner).lower()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@member.command("remove")
@_data_dir
@click.argument("name")
def member_remove(data_dir: str, name: str) -> None:
    """Remove the member NAME (a server's node name) from the cluster."""
    from k8py.server.etcdmembers import remove_member

    if not _call(data_dir, lambda client: remove_member(client, name)):
        raise click.ClickException(f"no etcd member named {name!r}")
    click.echo(f"Member {name} removed from the cluster")
