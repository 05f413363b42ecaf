"""`k8py server` and `k8py agent --simulate` as processes, driven by kubectl: the control
loops run in the server, the simulated nodes reach it over HTTPS with the kubeconfig."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import stop_process, wait_for


@pytest.fixture(scope="module")
def simulated(cluster):
    log = open(cluster.root / "agent.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "k8py", "agent", "--simulate", "2",
                             "--node-name", "e2e", "--kubeconfig", cluster.kubeconfig],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc, timeout=20)
        log.close()


def test_deployment_runs_on_simulated_nodes(cluster, simulated):
    def nodes_ready():
        out = cluster.kubectl("get", "nodes", "-l", "k8py.io/simulated=true", "-o", "json")
        items = json.loads(out.stdout)["items"]
        return len(items) == 2 and all(
            c["status"] == "True" for n in items for c in n["status"]["conditions"]
            if c["type"] == "Ready")

    wait_for(nodes_ready, 30, "2 simulated nodes Ready", interval=0.2)
    cluster.kubectl("create", "deployment", "sim-web", "--image=nginx", "--replicas=4")
    cluster.kubectl("rollout", "status", "deployment/sim-web", "--timeout=60s", timeout=70)
    pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=sim-web", "-o",
                                      "json").stdout)["items"]
    assert len(pods) == 4
    assert {p["spec"]["nodeName"] for p in pods} <= {"sim-e2e-0", "sim-e2e-1"}
    assert all(p["status"]["phase"] == "Running" and p["status"]["podIP"] for p in pods)
    cluster.kubectl("delete", "deployment", "sim-web")
    wait_for(lambda: not json.loads(cluster.kubectl(
        "get", "pods", "-l", "app=sim-web", "-o", "json").stdout)["items"], 30,
        "pods of the deleted deployment gone", interval=0.2)


def test_bad_kubeconfig_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "k8py", "agent", "--simulate", "1",
                           "--kubeconfig", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "missing.yaml" in proc.stderr
