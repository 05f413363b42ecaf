"""A real `k8py server --disable-agent` process on a temp data dir and free port, and the real
kubectl 1.32 pointed at it (fresh HOME and cache, so nothing leaks between runs)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import stop_process

KUBECTL_CANDIDATES = (
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.32",
    "/usr/local/bin/kubectl.1.32",
)


def find_kubectl() -> str:
    for path in KUBECTL_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("kubectl.1.32")
    if found:
        return found
    pytest.fail("kubectl 1.32 not found: run ./install.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root, kubeconfig: str, kubectl: str):
        self.root = root
        self.kubeconfig = kubeconfig
        self.kubectl_path = kubectl
        self.env = {**os.environ, "HOME": str(root), "KUBECONFIG": kubeconfig}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 30) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.kubectl_path, "--cache-dir", str(self.root / "cache"), *args],
            input=input, capture_output=True, text=True, env=self.env, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("k8py")
    kubeconfig = str(root / "kubeconfig.yaml")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8py", "server", "--disable-agent", "--data-dir",
         str(root / "data"), "--bind-address", "127.0.0.1", "--https-listen-port",
         str(free_port()), "--write-kubeconfig", kubeconfig],
        stdout=log, stderr=subprocess.STDOUT,
    )
    c = Cluster(root, kubeconfig, find_kubectl())
    try:
        deadline = time.monotonic() + 30
        while True:
            if os.path.exists(kubeconfig) and c.kubectl(
                "get", "--raw", "/readyz", check=False
            ).returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("server did not start: " +
                                     (root / "server.log").read_text())
            time.sleep(0.1)
        yield c
    finally:
        stop_process(proc, timeout=20)
        log.close()


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """One `k8py lab` (a server and two agents) for every module that needs several nodes."""
    from tests.e2e.labcluster import running_lab

    yield from running_lab(tmp_path_factory)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """This checkout's release artifacts (every architecture; tools/build_artifacts.py),
    served on loopback: their URL."""
    from tools import debianroots

    out = str(tmp_path_factory.mktemp("dist"))
    debianroots.build_artifacts(out)
    with debianroots.served(out) as url:
        yield url
