"""The installer end to end on this host, as users run it: release artifacts built by
tools/build_artifacts.py and served on loopback, `curl -sfL <url>/install.sh | sh -s - ...`
for a server and for an agent joining it with the token, each then started with the command
and environment its systemd unit names (these hosts run no systemd), in two network
namespaces the test creates (so nothing of k8py's network touches the host's); a pod on the
agent; `k8py-killall.sh` leaving no pod process, mount, link or nftables table of k8py's;
a restart bringing the pod back; the uninstall scripts leaving the host as it was.

The installer's directories (bin, lib, units) are under the test's own root through
INSTALL_K8PY_BIN_DIR/LIB_DIR/SYSTEMD_DIR, so the k8py this host has installed is never
touched."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest

from k8py import hostcleanup
from k8py.agent import cgroups, containerd
from tests.conftest import stop_process, wait_for
from tests.e2e import netns
from tests.e2e.conftest import find_kubectl
from tools import debianroots as installer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd")
                       or not shutil.which("curl") or not shutil.which("shellcheck"),
                       reason="needs root, containerd, curl and shellcheck (tests/run.sh)"),
]

SERVER_IP, AGENT_IP = "10.97.0.1", "10.97.0.2"
PORT = 6443


def host_state(root: str) -> dict[str, str]:
    def run(*command):
        return subprocess.run(command, capture_output=True, text=True).stdout
    return {"links": run("ip", "-o", "link", "show"), "netns": run("ip", "netns", "list"),
            "nft": run("nft", "list", "tables"), "routes": run("ip", "route", "show"),
            "mounts": "".join(line for line in open("/proc/self/mounts") if root in line),
            "pod cgroups": " ".join(sorted(cgroups.pod_cgroup_uids())),
            "runtime sockets": " ".join(sorted(os.listdir("/run/k8py")))
            if os.path.isdir("/run/k8py") else "",
            "root": " ".join(sorted(os.listdir(root)))}


class Installed:
    """Where the test installs, and the processes it starts."""

    def __init__(self, root: str, url: str):
        self.root, self.url = root, url
        self.bin = os.path.join(root, "bin")
        self.lib = os.path.join(root, "lib")
        self.units = os.path.join(root, "units")
        self.server_data = os.path.join(root, "server-data")
        self.agent_data = os.path.join(root, "agent-data")
        self.kubeconfig = os.path.join(root, "kubeconfig")
        self.env = {"INSTALL_K8PY_ARTIFACT_URL": url, "INSTALL_K8PY_BIN_DIR": self.bin,
                    "INSTALL_K8PY_LIB_DIR": self.lib, "INSTALL_K8PY_SYSTEMD_DIR": self.units,
                    "INSTALL_K8PY_SKIP_PACKAGES": "true"}
        self.processes: list[subprocess.Popen] = []

    def install(self, args: str, **env: str) -> str:
        done = installer.install(self.url, args, {**self.env, **env})
        assert done.returncode == 0, done.stderr + done.stdout
        return done.stdout

    def start(self, unit: str, ns: str) -> subprocess.Popen:
        command, env = installer.unit_command(os.path.join(self.units, unit))
        log = open(os.path.join(self.root, unit + ".log"), "a")
        proc = subprocess.Popen([*netns.nsenter(ns), *command], stdout=log,
                                stderr=subprocess.STDOUT,
                                env={"PATH": os.environ["PATH"], **env})
        self.processes.append(proc)
        return proc

    def kubectl(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*netns.nsenter(ns), find_kubectl(), "--kubeconfig",
                               self.kubeconfig, "--cache-dir",
                               os.path.join(self.root, "cache"), *args],
                              capture_output=True, text=True, timeout=60)
        assert not check or done.returncode == 0, done.stderr
        return done

    def stop_all(self) -> None:
        for proc in self.processes:
            stop_process(proc, timeout=20)
        self.processes = []


def _wired(server_ns: str, agent_ns: str) -> None:
    """A veth pair between the two namespaces: the server at SERVER_IP, the agent at
    AGENT_IP."""
    subprocess.run([*netns.nsenter(server_ns), "ip", "link", "add", "eth0", "type", "veth",
                    "peer", "name", "eth0", "netns", agent_ns], check=True)
    for ns, ip in ((server_ns, SERVER_IP), (agent_ns, AGENT_IP)):
        for command in (["ip", "addr", "add", f"{ip}/24", "dev", "eth0"],
                        ["ip", "link", "set", "eth0", "up"]):
            subprocess.run([*netns.nsenter(ns), *command], check=True)


def _pod_running(installed: Installed, ns: str) -> str:
    def running():
        done = installed.kubectl(ns, "get", "pod", "sleeper", "-o", "json", check=False)
        if done.returncode != 0:
            return None
        pod = json.loads(done.stdout)
        return pod["status"].get("phase") == "Running" and pod["metadata"]["uid"]
    return wait_for(running, timeout=120, interval=0.5, what="the pod running on the agent")


def test_install_killall_restart_and_uninstall(artifacts, tmp_path):
    root = str(tmp_path)
    before = host_state(root)
    installed = Installed(root, artifacts)
    with netns.created() as server_ns, netns.created() as agent_ns:
        try:
            _wired(server_ns, agent_ns)
            out = installed.install(
                f"server --disable-agent --data-dir {installed.server_data} "
                f"--bind-address {SERVER_IP} --https-listen-port {PORT} "
                f"--write-kubeconfig {installed.kubeconfig}")
            assert "k8py version" in out and "no systemd or openrc" in out
            unit = os.path.join(installed.units, "k8py.service")
            with open(unit) as f:
                text = f.read()
            for line in ("Type=notify", "Delegate=yes", "KillMode=process", "Restart=always",
                         f"ExecStart={installed.bin}/k8py server '--disable-agent'"):
                assert line in text, line
            for script in ("k8py", "k8py-killall.sh", "k8py-uninstall.sh"):
                assert os.access(os.path.join(installed.bin, script), os.X_OK), script
            lint = subprocess.run(["shellcheck", *(os.path.join(installed.bin, s) for s in
                                                   ("k8py-killall.sh", "k8py-uninstall.sh"))],
                                  capture_output=True, text=True)
            assert lint.returncode == 0, lint.stdout

            installed.start("k8py.service", server_ns)
            wait_for(lambda: os.path.exists(installed.kubeconfig) and installed.kubectl(
                server_ns, "get", "--raw", "/readyz", check=False).returncode == 0,
                timeout=60, interval=0.5, what="the installed server serving")
            token = subprocess.run(
                [*netns.nsenter(server_ns), os.path.join(installed.bin, "k8py"), "token",
                 "create", "--kubeconfig", installed.kubeconfig],
                capture_output=True, text=True, check=True).stdout.strip()

            again = installed.install(f"agent --data-dir {installed.agent_data} "
                                      f"--node-name installed-agent --node-ip {AGENT_IP}",
                                      K8PY_URL=f"https://{SERVER_IP}:{PORT}", K8PY_TOKEN=token)
            assert "is installed already" in again  # the same artifact: not reinstalled
            env_file = os.path.join(installed.units, "k8py-agent.service.env")
            assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
            with open(env_file) as f:
                env_text = f.read()
            assert f"K8PY_TOKEN={token}" in env_text
            assert f"K8PY_SERVER=https://{SERVER_IP}:{PORT}" in env_text
            # the test image, as an airgap archive the agent imports at start
            images = os.path.join(installed.agent_data, "agent", "images")
            os.makedirs(images)
            subprocess.run([os.path.join(installed.bin, "k8py"), "images", "build-busybox",
                            "--output", os.path.join(images, "busybox.tar")], check=True,
                           capture_output=True)
            installed.start("k8py-agent.service", agent_ns)
            installed.kubectl(server_ns, "run", "sleeper", "--image",
                              "k8py.local/busybox:latest", "--image-pull-policy",
                              "IfNotPresent", "--overrides",
                              json.dumps({"spec": {"nodeName": "installed-agent"}}),
                              "--", "sleep", "3600")
            uid = _pod_running(installed, server_ns)
            assert cgroups.pod_processes(uid)

            killall = subprocess.run([*netns.nsenter(agent_ns),
                                      os.path.join(installed.bin, "k8py-killall.sh")],
                                     capture_output=True, text=True, timeout=120)
            assert killall.returncode == 0, killall.stderr
            for proc in installed.processes:
                proc.wait(timeout=30)
            installed.processes = []
            assert not cgroups.pod_processes(uid)
            assert not hostcleanup.holding(root), "a process (containerd, a shim) of the test's k8py"
            assert not hostcleanup.holding(containerd.socket_path(installed.agent_data))
            assert not hostcleanup.k8py_processes(installed.server_data)
            assert not hostcleanup.k8py_processes(installed.agent_data)
            assert not [line for line in open("/proc/self/mounts") if root in line]
            links = subprocess.run([*netns.nsenter(agent_ns), "ip", "-o", "link", "show"],
                                   capture_output=True, text=True).stdout
            assert not [link for link in hostcleanup.LINKS if f" {link}:" in links], links
            tables = subprocess.run([*netns.nsenter(agent_ns), "nft", "list", "tables"],
                                    capture_output=True, text=True).stdout
            assert "k8py" not in tables, tables

            # started again, the pod comes back
            installed.start("k8py.service", server_ns)
            wait_for(lambda: installed.kubectl(server_ns, "get", "--raw", "/readyz",
                                               check=False).returncode == 0,
                     timeout=60, interval=0.5, what="the server serving again")
            installed.start("k8py-agent.service", agent_ns)
            assert _pod_running(installed, server_ns) == uid
            wait_for(lambda: cgroups.pod_processes(uid), timeout=60, interval=0.5,
                     what="the pod's containers running again")

            for script, ns in (("k8py-agent-uninstall.sh", agent_ns),
                               ("k8py-uninstall.sh", server_ns)):
                done = subprocess.run([*netns.nsenter(ns), os.path.join(installed.bin, script)],
                                      capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, done.stderr
            assert "k8py: uninstalled" in done.stdout
            for proc in installed.processes:
                proc.wait(timeout=30)
            installed.processes = []
        finally:
            installed.stop_all()
            for data_dir in (installed.server_data, installed.agent_data):
                hostcleanup.kill_runtime(data_dir)
                hostcleanup.unmount_under(data_dir)
    for directory in (installed.bin, installed.lib, installed.units):
        assert not os.path.exists(directory) or not os.listdir(directory), directory
    for gone in (installed.server_data, installed.agent_data, installed.kubeconfig):
        assert not os.path.exists(gone), gone
    shutil.rmtree(os.path.join(root, "cache"), ignore_errors=True)
    for leftover in ("bin", "units", "lib", "k8py.service.log", "k8py-agent.service.log"):
        path = os.path.join(root, leftover)
        if os.path.isdir(path):
            os.rmdir(path)  # empty: asserted above
        elif os.path.exists(path):
            os.remove(path)
    after = host_state(root)
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
