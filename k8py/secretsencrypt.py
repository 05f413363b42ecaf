"""`k8py secrets-encrypt status | prepare | rotate | reencrypt | rotate-keys`: the client side of
the server's key rotation endpoints (`k8py.server.apiserver.keyrotation`), as k3s's command.

The command reaches the server the admin kubeconfig names (its client certificate, or token,
is a system:masters identity; anyone else gets 403) with k3s's requests: `GET
/v1-k8py/encrypt/status`, `PUT /v1-k8py/encrypt/config {"stage", "force", "skip"}`.
`status` prints k3s's report:

    Encryption Status: Enabled
    Current Rotation Stage: start
    Server Encryption Hashes: All hashes match

    Active  Key Type  Name
    ------  --------  ----
     *      AES-CBC   aescbckey

What the server says when it refuses (a wrong stage, no encryption configured) is one line,
exit code 1. aiohttp is imported only when a command runs: `k8py.cli` imports this module.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import click

STATUS_PATH = "/v1-k8py/encrypt/status"
CONFIG_PATH = "/v1-k8py/encrypt/config"
TIMEOUT = 70.0  # seconds, as k3s's rotate-keys call


def request(kubeconfig: str, method: str, path: str, body: dict | None = None
            ) -> dict[str, Any]:
    """The server's JSON answer; a ClickException (one line) for anything else."""
    import aiohttp

    from k8py.client.http import KubeconfigError, load_kubeconfig

    try:
        server, tls, token = load_kubeconfig(kubeconfig)
    except KubeconfigError as exc:
        raise click.ClickException(str(exc)) from None
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call() -> tuple[int, bytes]:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls),
                timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            async with session.request(method, server + path, json=body,
                                       headers=headers) as response:
                return response.status, await response.read()
    try:
        code, raw = asyncio.run(call())
    except (aiohttp.ClientError, OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
        raise click.ClickException(f"cannot reach the server at {server}: "
                                   f"{exc or 'timed out'}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if code != 200 or not isinstance(answer, dict):
        message = answer.get("message") if isinstance(answer, dict) else None
        raise click.ClickException(
            f"{message or raw.decode(errors='replace')[:200] or code} (HTTP {code})")
    return answer


def render(status: dict[str, Any]) -> str:
    """k3s's text for `secrets-encrypt status`."""
    if status.get("enable") is None:
        return "Encryption Status: Disabled, no configuration file found"
    lines = [f"Encryption Status: {'Enabled' if status['enable'] else 'Disabled'}",
             f"Current Rotation Stage: {status.get('stage', '')}",
             "Server Encryption Hashes: " + ("All hashes match" if status.get("hashmatch")
                                            else status.get("hasherror", ""))]
    if status.get("error"):
        lines.append(f"Last Reencrypt Error: {status['error']}")
    rows = [("Active", "Key Type", "Name"), ("------", "--------", "----")]
    rows += [(" *" if key.get("active") else "", key.get("type", ""), key.get("name", ""))
             for key in status.get("keys", [])]
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(2)]  # Go's tabwriter
    table = [f"{a:<{widths[0]}}{b:<{widths[1]}}{c}".rstrip() for a, b, c in rows]
    return "\n".join(lines + [""] + table) + "\n"


def change(kubeconfig: str, stage: str, force: bool = False, skip: bool = False
           ) -> dict[str, Any]:
    return request(kubeconfig, "PUT", CONFIG_PATH,
                   {"stage": stage, "force": force, "skip": skip})


@click.group("secrets-encrypt")
def command() -> None:
    """Secrets encryption keys: status, prepare, rotate, reencrypt (k3s's procedure)."""


_KUBECONFIG = click.option("--kubeconfig", envvar="KUBECONFIG", default="/etc/k8py/k8py.yaml",
                           show_default=True, type=click.Path(dir_okay=False),
                           help="An admin kubeconfig of the server")
_FORCE = click.option("--force", "-f", is_flag=True,
                      help="Skip the check that the server is at the stage before this one")


@command.command("status")
@_KUBECONFIG
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format")
def status(kubeconfig: str, output: str) -> None:
    """Whether Secrets are encrypted, the rotation stage, and the keys."""
    answer = request(kubeconfig, "GET", STATUS_PATH)
    click.echo(json.dumps(answer, indent=2) if output == "json" else render(answer))


@command.command("prepare")
@_KUBECONFIG
@_FORCE
def prepare(kubeconfig: str, force: bool) -> None:
    """Add a new key; it decrypts at once and encrypts after `rotate`."""
    change(kubeconfig, "prepare", force)
    click.echo("prepare completed successfully")


@command.command("rotate")
@_KUBECONFIG
@_FORCE
def rotate(kubeconfig: str, force: bool) -> None:
    """Make the key `prepare` added the one that encrypts."""
    change(kubeconfig, "rotate", force)
    click.echo("rotate completed successfully")


@command.command("reencrypt")
@_KUBECONFIG
@_FORCE
@click.option("--skip", is_flag=True, help="Keep the old key after reencrypting")
def reencrypt(kubeconfig: str, force: bool, skip: bool) -> None:
    """Rewrite every Secret with the encrypting key, then drop the old key (in the
    background: `status` says reencrypt_finished when done)."""
    change(kubeconfig, "reencrypt_active", force, skip)
    click.echo("reencryption started")


@command.command("rotate-keys")
@_KUBECONFIG
def rotate_keys(kubeconfig: str) -> None:
    """prepare, rotate and reencrypt in one step."""
    change(kubeconfig, "rotate_keys")
    click.echo("keys rotated, reencryption started")
