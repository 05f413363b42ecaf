"""Auto-deployed manifests on the shared `k8py lab`, seen with kubectl: a file dropped into the
server's `<data-dir>/server/manifests` appears in the cluster within seconds and follows
edits; a broken file gets a Warning Event on its Addon while the others stay applied; a
`.skip` file stops the management of its manifest. (`--disable NAME`, which needs a server
restarted with the flag, is tested against a real server process in
tests/integration/test_deploy.py.)"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import wait_for
from tests.e2e.labcluster import LabCluster

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd")
                       or not os.path.exists("/usr/lib/cni/bridge"),
                       reason="needs root, containerd and the CNI plugins"),
]


def configmap(name: str, value: str) -> str:
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
            f"  namespace: default\ndata:\n  value: {value!r}\n")


def write(path: str, text: str) -> None:
    """Replaced at once (as editors do), with the mtime moved on."""
    with open(path + ".partial", "w") as f:
        f.write(text)
    os.replace(path + ".partial", path)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def value(lab: LabCluster, name: str) -> str | None:
    done = lab.kubectl("get", "configmap", name, "-o", "jsonpath={.data.value}", check=False)
    return done.stdout if done.returncode == 0 else None


def test_manifests_directory_applies_follows_warns_and_skips(lab):
    directory = os.path.join(os.path.dirname(lab.kubeconfig), "server", "server", "manifests")
    assert os.path.isdir(directory)  # the packaged add-ons are staged there
    files = [os.path.join(directory, name) for name in
             ("e2e-app.yaml", "e2e-broken.yaml", "e2e-app.yaml.skip")]
    try:
        write(files[0], configmap("e2e-app", "one"))
        wait_for(lambda: value(lab, "e2e-app") == "one", timeout=20, interval=0.5,
                 what="the dropped manifest applied")
        write(files[0], configmap("e2e-app", "two"))
        wait_for(lambda: value(lab, "e2e-app") == "two", timeout=20, interval=0.5,
                 what="the edit followed")

        write(files[1], "apiVersion: v1\nkind: [unclosed\n")

        def warned():
            events = json.loads(lab.kubectl(
                "get", "events", "-n", "kube-system", "-o", "json", "--field-selector",
                "involvedObject.kind=Addon,involvedObject.name=e2e-broken").stdout)["items"]
            return [e for e in events if e["reason"] == "ParseManifestFailed"]
        event = wait_for(warned, timeout=20, interval=0.5, what="the broken file's Event")[0]
        assert event["type"] == "Warning"
        assert event["message"].startswith(f'Parse manifest at "{files[1]}" failed: ')
        assert value(lab, "e2e-app") == "two"  # the others stay applied
        addon = json.loads(lab.kubectl("get", "addons.k8py.io", "e2e-app", "-n", "kube-system",
                                       "-o", "json").stdout)
        assert addon["spec"]["source"] == files[0]

        # .skip: the file is left alone, edits no longer applied
        write(files[2], "")
        write(files[0], configmap("e2e-app", "ignored"))
        write(files[1], configmap("e2e-mended", "yes"))  # a later scan's witness
        wait_for(lambda: value(lab, "e2e-mended") == "yes", timeout=20, interval=0.5,
                 what="the mended file applied")
        assert value(lab, "e2e-app") == "two"
    finally:
        for path in files:
            if os.path.exists(path):
                os.remove(path)
        lab.kubectl("delete", "configmap", "e2e-app", "e2e-mended", "--ignore-not-found")
