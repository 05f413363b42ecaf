"""`k8py server --secrets-encryption` as a real process: it generates its key file (0600),
Secrets reach the database encrypted, and `k8py secrets-encrypt rotate-keys` moves them to a
new key while the server runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys

from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from tests.conftest import wait_for
from tests.integration.test_server_process import start_server, wait_for_line

PLAIN = b"k8py-process-plaintext-0c4e1b"


def k8py(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "k8py", *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_secrets_encryption_end_to_end(tmp_path):
    proc = start_server(tmp_path, "--secrets-encryption", "--disable-agent",
                        "--disable-scheduler", "--disable-controller-manager")
    try:
        wait_for_line(proc, "wrote admin kubeconfig", timeout=60)
        config = tmp_path / "server" / "cred" / "encryption-config.json"
        assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
        kubeconfig = str(tmp_path / "kubeconfig.yaml")
        status = k8py("secrets-encrypt", "status", "--kubeconfig", kubeconfig)
        assert status.startswith("Encryption Status: Enabled\nCurrent Rotation Stage: start\n")

        async def create() -> None:
            client = Client(HttpTransport.from_kubeconfig(kubeconfig))
            try:
                await client.create(builtin("v1", "secrets"), {
                    "metadata": {"name": "process", "namespace": "default"},
                    "stringData": {"v": PLAIN.decode()}})
            finally:
                await client.close()
        asyncio.run(create())

        assert k8py("secrets-encrypt", "rotate-keys", "--kubeconfig", kubeconfig) == \
            "keys rotated, reencryption started\n"
        state = wait_for(lambda: (lambda s: s if s["stage"] == "reencrypt_finished" else None)(
            json.loads(k8py("secrets-encrypt", "status", "-o", "json", "--kubeconfig",
                            kubeconfig))), timeout=60, what="reencrypt_finished")
        (key,) = state["keys"]
        assert key["name"].startswith("aescbckey-") and key["active"]
        db = tmp_path / "server" / "db" / "state.db"
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            rows = conn.execute("SELECT value FROM kv WHERE key = ? ORDER BY revision DESC",
                                ("/registry/core/secrets/default/process",)).fetchall()
        assert rows[0][0].startswith(f"k8s:enc:aescbc:v1:{key['name']}:".encode())
        for path in (db, str(db) + "-wal"):
            if os.path.exists(path):
                with open(path, "rb") as f:
                    assert PLAIN not in f.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
