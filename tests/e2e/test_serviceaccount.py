"""A pod talks to the API server as its ServiceAccount: `k8py server` with its embedded agent
(real containerd, CNI, the nftables proxy, cluster DNS) in a network namespace this test
creates, the API server bound to the node's address so that the `kubernetes` Service leads
to it. The pod reads what ServiceAccount admission mounted (token, ca.crt, namespace) and
lists pods with kubectl (a static binary, given to the busybox pod by a hostPath mount):
once with its in-cluster configuration (KUBERNETES_SERVICE_HOST/PORT, the token, the CA),
once through `https://kubernetes.default.svc` with the token and the CA named. (busybox's
own wget cannot: its TLS sends no signature_algorithms, so it can only agree on SHA-1
signatures, which the server's OpenSSL refuses.)

RBAC decides: the pod's account is granted `list pods` by a RoleBinding, and a pod whose
account nothing binds gets upstream's 403.

Cleanup as `test_agent`: pods deleted, the server stopped, leftovers killed and unmounted,
the namespace removed. Needs root, containerd, runc and the CNI plugins.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import wait_for
from tests.e2e.conftest import find_kubectl
from tests.e2e.test_agent import BUSYBOX, NODE, NODE_IP, Node, running_node

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not shutil.which("runc")
    or not os.path.exists("/usr/lib/cni/bridge"),
    reason="needs root, containerd, runc and the CNI plugins")

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
IN_CLUSTER = "HOME=/tmp /kubectl get pods -o json"
BY_NAME = (f'HOME=/tmp /kubectl --server=https://kubernetes.default.svc --token="$(cat '
           f'{TOKEN_DIR}/token)" --certificate-authority={TOKEN_DIR}/ca.crt get pods -n '
           f'"$(cat {TOKEN_DIR}/namespace)" -o json')


class ReachableNode(Node):
    """The API server on the node's address, not loopback: pods reach it through the
    `kubernetes` Service."""

    def start(self) -> None:
        self.log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(
            [*self.enter(), sys.executable, "-m", "k8py", "server", "--data-dir",
             str(self.data), "--bind-address", NODE_IP, "--https-listen-port", "6443",
             "--write-kubeconfig", self.kubeconfig, "--node-name", NODE, "--node-ip",
             NODE_IP],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.getcwd()})


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with running_node(ReachableNode, tmp_path_factory.mktemp("serviceaccount")) as n:
        yield n


def running_pod(node: Node, name: str, account: str = "") -> None:
    spec = {"terminationGracePeriodSeconds": 1, "containers": [{
        "name": "main", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
        "command": ["sleep", "3600"],
        "volumeMounts": [{"name": "kubectl", "mountPath": "/kubectl", "readOnly": True}]}],
        "volumes": [{"name": "kubectl", "hostPath": {"path": find_kubectl(),
                                                     "type": "File"}}]}
    if account:
        spec["serviceAccountName"] = account
    node.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    wait_for(lambda: node.get("pod", name).get("status", {}).get("phase") == "Running", 90,
             f"{name} Running")


def exec_sh(node: Node, pod: str, script: str) -> subprocess.CompletedProcess:
    return node.kubectl("exec", pod, "--", "sh", "-c", script, check=False)


def test_pod_lists_pods_with_its_token(node):
    running_pod(node, "reader")
    pod = node.get("pod", "reader")
    assert [v["name"] for v in pod["spec"]["volumes"]
            if v["name"].startswith("kube-api-access-")]
    assert exec_sh(node, "reader", f"cat {TOKEN_DIR}/namespace").stdout == "default"
    ca = exec_sh(node, "reader", f"cat {TOKEN_DIR}/ca.crt").stdout
    assert ca == (node.data / "server" / "tls" / "server-ca.crt").read_text()
    token = exec_sh(node, "reader", f"cat {TOKEN_DIR}/token").stdout
    assert token.count(".") == 2
    env = exec_sh(node, "reader", "env").stdout
    assert "KUBERNETES_SERVICE_HOST=10.43.0.1" in env and "KUBERNETES_SERVICE_PORT=443" in env
    # the mount is read-only
    assert exec_sh(node, "reader", f"touch {TOKEN_DIR}/x").returncode != 0

    # RBAC: the pod's account may list pods (without, see test_unbound_account_is_forbidden)
    node.kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods")
    node.kubectl("create", "rolebinding", "reader-lists-pods", "--role=pod-reader",
                 "--serviceaccount=default:default")
    for script, what in ((IN_CLUSTER, "in-cluster"), (BY_NAME, "kubernetes.default.svc")):
        last = []

        def listed(script=script):
            done = exec_sh(node, "reader", script)
            last[:] = [done]
            return done.returncode == 0 and done
        try:
            done = wait_for(listed, 60, f"the pod lists pods ({what})", interval=1)
        except AssertionError:
            raise AssertionError(f"{what}: {last[0].stderr}") from None
        body = json.loads(done.stdout)
        assert body["kind"] == "List" or body["kind"] == "PodList"
        assert "reader" in [item["metadata"]["name"] for item in body["items"]]


def test_unbound_account_is_forbidden(node):
    node.kubectl("create", "serviceaccount", "unbound")
    running_pod(node, "outsider", "unbound")
    done = exec_sh(node, "outsider", BY_NAME)
    # depends on RBAC: nothing grants system:serviceaccount:default:unbound `list pods`
    assert done.returncode != 0
    assert ('Error from server (Forbidden): pods is forbidden: User '
            '"system:serviceaccount:default:unbound" cannot list resource "pods" in API group '
            '"" in the namespace "default"') in done.stderr
