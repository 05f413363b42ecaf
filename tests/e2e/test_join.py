"""`k8py agent --server URL --token TOKEN` against a `k8py server --disable-agent` process:
the agent checks the server's CA against the token, gets node credentials, and its simulated
nodes run a kubectl-created Deployment as the joined identity (HTTPS on loopback only)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from tests.conftest import stop_process, wait_for


def _server_url(cluster) -> str:
    with open(cluster.kubeconfig) as f:
        return yaml.safe_load(f)["clusters"][0]["cluster"]["server"]


def _token(cluster) -> str:
    return (cluster.root / "data" / "server" / "token").read_text().strip()


def _start(cluster, data_dir, log_name: str) -> tuple[subprocess.Popen, object]:
    log = open(cluster.root / log_name, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8py", "agent", "--simulate", "2", "--node-name", "joined",
         "--server", _server_url(cluster), "--token", _token(cluster),
         "--data-dir", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def _stop(proc: subprocess.Popen, log) -> None:
    stop_process(proc, timeout=20)
    log.close()


@pytest.fixture(scope="module")
def joined(cluster, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("agent-data")
    proc, log = _start(cluster, data_dir, "joined-agent.log")
    try:
        yield proc, data_dir
    finally:
        _stop(proc, log)


def test_simulated_nodes_join_with_the_token_and_run_a_deployment(cluster, joined):
    proc, data_dir = joined

    def nodes_ready():
        assert proc.poll() is None, (cluster.root / "joined-agent.log").read_text()
        out = cluster.kubectl("get", "nodes", "-l", "k8py.io/simulated=true", "-o", "json")
        items = [n for n in json.loads(out.stdout)["items"]
                 if n["metadata"]["name"].startswith("sim-joined-")]
        return len(items) == 2 and all(
            c["status"] == "True" for n in items for c in n["status"]["conditions"]
            if c["type"] == "Ready")

    wait_for(nodes_ready, 30, "2 joined simulated nodes Ready", interval=0.2)

    # each simulated node joined as itself, with its own credentials
    tls = data_dir / "agent" / "simulated" / "sim-joined-0" / "tls"
    assert stat.S_IMODE(os.stat(tls).st_mode) == 0o700
    for name in ("client-kubelet.key", "serving-kubelet.key", "client-kubelet.crt",
                 "server-ca.crt"):
        assert stat.S_IMODE(os.stat(tls / name).st_mode) == 0o600, name
    assert (tls / "server-ca.crt").read_bytes() == \
        (cluster.root / "data" / "server" / "tls" / "server-ca.crt").read_bytes()
    log = (cluster.root / "joined-agent.log").read_text()
    assert "as system:node:sim-joined-0;" in log and "as system:node:sim-joined-1;" in log

    cluster.kubectl("create", "-f", "-", "--validate=false", input="""
apiVersion: apps/v1
kind: Deployment
metadata: {name: joined-web}
spec:
  replicas: 3
  selector: {matchLabels: {app: joined-web}}
  template:
    metadata: {labels: {app: joined-web}}
    spec:
      nodeSelector: {k8py.io/simulated: "true"}
      containers: [{name: web, image: busybox}]
""")
    cluster.kubectl("rollout", "status", "deployment/joined-web", "--timeout=60s", timeout=70)
    pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=joined-web", "-o",
                                      "json").stdout)["items"]
    assert len(pods) == 3
    assert {p["spec"]["nodeName"] for p in pods} <= {"sim-joined-0", "sim-joined-1"}
    assert all(p["status"]["phase"] == "Running" and p["status"]["podIP"] for p in pods)
    cluster.kubectl("delete", "deployment", "joined-web")


def test_a_restarted_agent_reuses_its_credentials(cluster, joined):
    _, data_dir = joined
    tls = data_dir / "agent" / "simulated" / "sim-joined-0" / "tls"
    cert = tls / "client-kubelet.crt"
    before = cert.read_bytes()
    proc = subprocess.run(  # a second, short-lived agent on the same data dir
        [sys.executable, "-c",
         "import asyncio, sys\n"
         "from k8py.agent.join import join\n"
         "c = asyncio.run(join(sys.argv[1], sys.argv[2], sys.argv[3], 'sim-joined-0'))\n"
         "print(c.client_cert)\n",
         _server_url(cluster), _token(cluster), str(tls)],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert cert.read_bytes() == before


def _one_line_failure(cluster, token: str, tmp_path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "k8py", "agent", "--simulate", "1", "--server",
         _server_url(cluster), "--token", token, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "agent" / "simulated" / "sim-node-0" / "tls").exists()
    return lines[0]


def test_a_wrong_ca_hash_is_refused(cluster, tmp_path):
    secret = _token(cluster).split("::server:", 1)[1]
    wrong = hashlib.sha256(b"not the CA").hexdigest()
    line = _one_line_failure(cluster, f"K10{wrong}::server:{secret}", tmp_path)
    assert line == "k8py: error: the server's CA does not match the token"


def test_a_wrong_secret_is_refused(cluster, tmp_path):
    ca_hash = _token(cluster).split("::", 1)[0]
    line = _one_line_failure(cluster, f"{ca_hash}::server:wrong", tmp_path)
    assert "refused the token's secret" in line


def test_a_chosen_server_token_and_the_short_form_join(tmp_path):
    """As k3s: `k8py server --token SECRET` makes SECRET the join secret (the token file
    becomes K10<CA hash>::server:SECRET), and an agent may join with SECRET alone, taking the
    CA the server shows (logged as unpinned)."""
    from tests.e2e.conftest import Cluster, find_kubectl, free_port

    kubeconfig = str(tmp_path / "kubeconfig.yaml")
    server_log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "k8py", "server", "--disable-agent", "--data-dir",
         str(tmp_path / "data"), "--bind-address", "127.0.0.1", "--https-listen-port",
         str(free_port()), "--write-kubeconfig", kubeconfig, "--token", "chosen-secret"],
        stdout=server_log, stderr=subprocess.STDOUT)
    cluster = Cluster(tmp_path, kubeconfig, find_kubectl())
    agent = agent_log = None
    try:
        wait_for(lambda: os.path.exists(kubeconfig) and cluster.kubectl(
            "get", "--raw", "/readyz", check=False).returncode == 0, 30, "the server")
        token = (tmp_path / "data" / "server" / "token").read_text().strip()
        assert token.startswith("K10") and token.endswith("::server:chosen-secret")
        agent_log = open(tmp_path / "agent.log", "w")
        agent = subprocess.Popen(
            [sys.executable, "-m", "k8py", "agent", "--simulate", "1", "--node-name", "short",
             "--server", _server_url(cluster), "--token", "chosen-secret",
             "--data-dir", str(tmp_path / "agent-data")],
            stdout=agent_log, stderr=subprocess.STDOUT)

        def ready():
            assert agent.poll() is None, (tmp_path / "agent.log").read_text()
            out = cluster.kubectl("get", "node", "sim-short-0", "-o", "json", check=False)
            return out.returncode == 0 and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in json.loads(out.stdout)["status"]["conditions"])
        wait_for(ready, 30, "the node joined with the short token", interval=0.2)
        assert "holds no CA hash" in (tmp_path / "agent.log").read_text()
    finally:
        if agent is not None:
            stop_process(agent, timeout=20)
            agent_log.close()
        stop_process(server, timeout=20)
        server_log.close()
