"""APIServices: every group-version served here has one, Available and Local, as
kube-aggregator's autoregister writes them; a CRD's come and go with it. `kubectl get
apiservices` prints them with upstream's columns."""

from __future__ import annotations

import asyncio
import os
import subprocess

from k8py.server import pki
from tests.conftest import eventually
from tests.e2e.conftest import find_kubectl
from tests.integration.apiserver.test_crds import CRD

APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"


async def test_local_group_versions_are_available(client):
    status, body = await client.request("GET", APISERVICES)
    assert status == 200
    by_name = {item["metadata"]["name"]: item for item in body["items"]}
    for name in ("v1.", "v1.apps", "v1.batch", "v1.apiregistration.k8s.io",
                 "v1.rbac.authorization.k8s.io"):
        assert name in by_name, sorted(by_name)
    apps = by_name["v1.apps"]
    assert apps["spec"] == {"group": "apps", "version": "v1", "groupPriorityMinimum": 17800,
                            "versionPriority": 15}
    assert "service" not in apps["spec"]
    [available] = apps["status"]["conditions"]
    assert (available["type"], available["status"], available["reason"]) == \
        ("Available", "True", "Local")
    assert apps["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"] == "onstart"


async def test_crd_group_versions_come_and_go(client):
    status, _ = await client.request("POST", "/apis/apiextensions.k8s.io/v1/"
                                     "customresourcedefinitions", CRD)
    assert status == 201
    status, body = await client.request("GET", f"{APISERVICES}/v1.example.com")
    assert status == 200 and body["spec"]["group"] == "example.com"
    assert body["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"] == "true"
    status, _ = await client.request("DELETE", "/apis/apiextensions.k8s.io/v1/"
                                     "customresourcedefinitions/widgets.example.com")
    assert status == 200

    async def gone():
        status, _ = await client.request("GET", f"{APISERVICES}/v1.example.com")
        return status == 404
    await eventually(gone, timeout=10, what="the CRD's APIService to go")


async def test_kubectl_get_apiservices(server, tmp_path):
    kubeconfig = str(tmp_path / "kubeconfig.yaml")
    pki.write_kubeconfig(server.certs, kubeconfig, server.url, 0o600)
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": kubeconfig}
    proc = await asyncio.to_thread(
        subprocess.run, [find_kubectl(), "--cache-dir", str(tmp_path / "cache"), "get",
                         "apiservices"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SERVICE", "AVAILABLE", "AGE"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:]}
    assert rows["v1.apps"] == ["Local", "True"] and rows["v1."] == ["Local", "True"]
