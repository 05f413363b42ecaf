"""A real node joined with a token: `k8py server --disable-agent` and `k8py agent --server URL
--token TOKEN` as processes (the agent with its own containerd), both in a network namespace
this test creates. A pod runs on the joined node, and `kubectl logs` and `exec` reach it
through the kubelet certificate the join issued. See `tests/e2e/netns.py` for the rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import stop_process, wait_for
from tests.e2e import netns
from tests.e2e.conftest import find_kubectl

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("containerd") or not shutil.which("runc")
    or not os.path.exists("/usr/lib/cni/bridge"),
    reason="needs root, containerd, runc and the CNI plugins")

NODE_IP = "10.99.0.2"


def test_joined_node_runs_a_pod_with_logs_and_exec(tmp_path):
    server_dir, agent_dir = tmp_path / "server", tmp_path / "agent"
    kubeconfig = tmp_path / "kubeconfig.yaml"
    images = agent_dir / "agent" / "images"
    images.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "k8py", "images", "build-busybox", "-o",
                    str(images / "busybox.tar")], check=True, capture_output=True)
    log = open(tmp_path / "processes.log", "w")
    server = agent = None
    with netns.created() as name:
        netns.add_node_address(name, NODE_IP)
        env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}

        def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
            proc = subprocess.run([*netns.nsenter(name), find_kubectl(), "--cache-dir",
                                   str(tmp_path / "cache"), *args], capture_output=True,
                                  text=True, env=env, timeout=60)
            if check and proc.returncode != 0:
                raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}\n"
                                     + (tmp_path / "processes.log").read_text()[-3000:])
            return proc

        try:
            server = subprocess.Popen(
                [*netns.nsenter(name), sys.executable, "-m", "k8py", "server",
                 "--disable-agent", "--data-dir", str(server_dir), "--bind-address", NODE_IP,
                 "--write-kubeconfig", str(kubeconfig)], stdout=log, stderr=subprocess.STDOUT)
            token_file = server_dir / "server" / "token"
            wait_for(lambda: kubeconfig.exists() and token_file.exists(), 30, "server up")
            agent = subprocess.Popen(
                [*netns.nsenter(name), sys.executable, "-m", "k8py", "agent", "--server",
                 f"https://{NODE_IP}:6443", "--token", token_file.read_text().strip(),
                 "--data-dir", str(agent_dir), "--node-name", "joined", "--node-ip", NODE_IP],
                stdout=log, stderr=subprocess.STDOUT)

            def node_ready() -> bool:
                assert agent.poll() is None, (tmp_path / "processes.log").read_text()[-3000:]
                out = kubectl("get", "node", "joined", "-o", "json", check=False)
                if out.returncode:
                    return False
                conditions = json.loads(out.stdout)["status"].get("conditions") or []
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

            wait_for(node_ready, 90, "joined node Ready")
            kubectl("run", "hello", "--image=k8py.local/busybox:latest",
                    "--image-pull-policy=IfNotPresent", "--restart=Never", "--",
                    "sh", "-c", "echo joined-hello; sleep 3600")
            wait_for(lambda: kubectl("get", "pod", "hello", "-o",
                                     "jsonpath={.status.phase}").stdout == "Running", 60,
                     "pod Running on the joined node")
            assert kubectl("get", "pod", "hello", "-o",
                           "jsonpath={.spec.nodeName}").stdout == "joined"
            wait_for(lambda: "joined-hello" in kubectl("logs", "hello").stdout, 20,
                     "the pod's log through the joined kubelet")
            exec_out = kubectl("exec", "hello", "--", "sh", "-c", "echo from-exec; exit 5",
                               check=False)
            assert exec_out.returncode == 5 and "from-exec" in exec_out.stdout
            kubectl("delete", "pod", "hello", "--grace-period=1")
        finally:
            stop_process(agent)
            stop_process(server)
            log.close()
            netns.kill_leftovers(str(agent_dir))
            netns.kill_leftovers(str(server_dir))
