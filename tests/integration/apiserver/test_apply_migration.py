"""kubectl 1.32: `apply --server-side` after a client-side `apply` takes over the fields of
`kubectl-client-side-apply` (kubectl moves them to its own Apply entry first, upstream's
CSA→SSA migration), so a changed value applies without a conflict; and an object created
by a plain create, applied with the same content, applies cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from k8py.server import pki
from tests.e2e.conftest import find_kubectl

CM = """apiVersion: v1
kind: ConfigMap
metadata: {name: migrated, namespace: default}
data: {key: %s}
"""


@pytest.fixture
def kubectl(server, tmp_path):
    kubeconfig = str(tmp_path / "kubeconfig.yaml")
    pki.write_kubeconfig(server.certs, kubeconfig, server.url, 0o600)
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": kubeconfig}

    async def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return await asyncio.to_thread(
            subprocess.run, [find_kubectl(), "--cache-dir", str(tmp_path / "c"), *args],
            input=input, capture_output=True, text=True, env=env, timeout=60)
    return run


async def test_client_side_then_server_side_apply(kubectl):
    first = await kubectl("apply", "-f", "-", input=CM % "one")
    assert first.returncode == 0, first.stderr
    second = await kubectl("apply", "--server-side", "-f", "-", input=CM % "two")
    assert second.returncode == 0, second.stderr
    got = await kubectl("get", "configmap", "migrated", "-o", "json", "--show-managed-fields")
    obj = json.loads(got.stdout)
    assert obj["data"] == {"key": "two"}
    owners = {(e["manager"], e["operation"]) for e in obj["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in owners
    assert ("kubectl-client-side-apply", "Update") not in owners, obj["metadata"]["managedFields"]


async def test_create_then_server_side_apply_same_content(kubectl):
    created = await kubectl("create", "-f", "-", input=CM.replace("migrated", "made") % "x")
    assert created.returncode == 0, created.stderr
    applied = await kubectl("apply", "--server-side", "-f", "-",
                            input=CM.replace("migrated", "made") % "x")
    assert applied.returncode == 0, applied.stderr
