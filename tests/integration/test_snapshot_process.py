"""Snapshots with a real `k8py server`: `k8py etcd-snapshot save` beside the running server,
scheduled snapshots with retention, `--cluster-reset` refused on a live data dir, then the
restore and a restart that serves every object with its resourceVersion again."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import threading

from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from tests.conftest import wait_for
from tests.integration.test_server_process import start_server, wait_for_line

CONFIGMAPS = builtin("v1", "configmaps")


def k8py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k8py", *args], capture_output=True,
                          text=True, timeout=60)


def drain(proc) -> list[str]:
    """Keep reading the server's log so it never blocks on a full pipe."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return lines


def call(kubeconfig: str, action):
    async def run():
        client = Client(HttpTransport.from_kubeconfig(kubeconfig))
        try:
            return await action(client)
        finally:
            await client.close()
    return asyncio.run(run())


async def configmaps(client) -> dict[str, str]:
    listing = await client.list(CONFIGMAPS, "default")
    return {item["metadata"]["name"]: item["metadata"]["resourceVersion"]
            for item in listing["items"]}


def test_snapshot_restore_with_a_real_server(tmp_path):
    kubeconfig = str(tmp_path / "kubeconfig.yaml")
    snapshots = tmp_path / "server" / "db" / "snapshots"
    flags = ("--disable-agent", "--disable-scheduler", "--disable-controller-manager")
    proc = start_server(tmp_path, *flags, "--etcd-snapshot-schedule-cron", "@every 1s",
                        "--etcd-snapshot-retention", "2")
    try:
        wait_for_line(proc, "wrote admin kubeconfig", timeout=60)
        drain(proc)

        async def fill(client):
            for i in range(20):
                await client.create(CONFIGMAPS, {"metadata": {"name": f"cm{i}"},
                                                 "data": {"i": str(i)}})
            return await configmaps(client)
        before = call(kubeconfig, fill)

        saved = k8py("etcd-snapshot", "save", "-d", str(tmp_path), "--name", "manual",
                     "--node-name", "n1")
        assert saved.returncode == 0, saved.stderr
        (manual,) = [p for p in snapshots.iterdir() if p.name.startswith("manual-n1-")]
        assert stat.S_IMODE(os.stat(manual).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(snapshots).st_mode) == 0o700

        # scheduled: several taken, never more than the retention kept
        seen: set[str] = set()

        def scheduled():
            names = {p.name for p in snapshots.iterdir() if p.name.startswith("etcd-snapshot-")}
            seen.update(names)
            return len(seen) >= 4 and len(names) <= 2
        wait_for(scheduled, timeout=30, what="scheduled snapshots pruned to 2")

        async def change(client):
            await client.create(CONFIGMAPS, {"metadata": {"name": "after"}})
            await client.delete(CONFIGMAPS, "cm0", "default")
        call(kubeconfig, change)

        refused = k8py("server", "-d", str(tmp_path), "--cluster-reset",
                       "--cluster-reset-restore-path", str(manual))
        assert refused.returncode == 1
        assert "in use by a running k8py server" in refused.stderr.strip().splitlines()[-1]
        assert "Traceback" not in refused.stderr
        listed = k8py("etcd-snapshot", "ls", "-d", str(tmp_path))
        assert listed.stdout.splitlines()[0].split() == ["Name", "Location", "Size", "Created"]
        assert manual.name in listed.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()

    restored = k8py("server", "-d", str(tmp_path), "--cluster-reset",
                    "--cluster-reset-restore-path", manual.name)  # a name in the directory
    assert restored.returncode == 0, restored.stderr
    assert "restart without --cluster-reset flag now" in restored.stderr
    old = [n for n in os.listdir(tmp_path / "server" / "db") if n.startswith("state-old-")]
    assert old

    proc = start_server(tmp_path, *flags, "--etcd-disable-snapshots")
    try:
        wait_for_line(proc, "wrote admin kubeconfig", timeout=60)
        drain(proc)

        async def check(client):
            after = await configmaps(client)
            created = await client.create(CONFIGMAPS, {"metadata": {"name": "new"}})
            return after, int(created["metadata"]["resourceVersion"])
        after, new_rv = call(kubeconfig, check)
        assert after == before  # cm0 back, "after" gone, every resourceVersion the same
        assert new_rv > max(int(rv) for rv in before.values())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
