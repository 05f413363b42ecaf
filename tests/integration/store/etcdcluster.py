"""A real etcd cluster for tests: N members of Debian's etcd-server on loopback ports, with
temporary data dirs and client TLS (server certificates and client-certificate authentication)
from a test CA. `stop()` ends every process it started; members can be killed and restarted."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k8py import certificates
from k8py.server import pki

ETCD = shutil.which("etcd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_pair(directory: str, name: str, cert, key) -> tuple[str, str]:
    cert_path, key_path = os.path.join(directory, f"{name}.crt"), os.path.join(directory,
                                                                             f"{name}.key")
    with open(cert_path, "wb") as f:
        f.write(certificates.pem(cert))
    certificates.write_private(key_path, certificates.key_pem(key))
    return cert_path, key_path


class EtcdCluster:
    def __init__(self, root: str, members: int = 3):
        self.root = root
        self.names = [f"m{i}" for i in range(members)]
        self.client_ports = [free_port() for _ in self.names]
        self.peer_ports = [free_port() for _ in self.names]
        self.procs: dict[int, subprocess.Popen] = {}
        tls = os.path.join(root, "tls")
        os.makedirs(tls, mode=0o700)
        ca, ca_key = pki.new_ca()
        self.cafile, _ = _write_pair(tls, "ca", ca, ca_key)
        week = datetime.timedelta(days=7)
        key = certificates.new_key()
        server = pki.issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd")]), key, ca, ca_key,
            validity=week, sans=[x509.DNSName("localhost"),
                                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
            usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        self.server_cert, self.server_key = _write_pair(tls, "server", server, key)
        key = certificates.new_key()
        client = pki.issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k8py")]), key,
                           ca, ca_key, validity=week,
                           usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
        self.certfile, self.keyfile = _write_pair(tls, "client", client, key)

    @property
    def endpoints(self) -> str:
        return ",".join(f"https://127.0.0.1:{p}" for p in self.client_ports)

    def tls(self) -> dict:
        return {"cafile": self.cafile, "certfile": self.certfile, "keyfile": self.keyfile}

    def start(self, timeout: float = 30) -> None:
        for i in range(len(self.names)):
            self.start_member(i, state="new")
        self.wait_healthy(timeout)

    def start_member(self, i: int, state: str = "existing") -> None:
        initial = ",".join(f"{n}=http://127.0.0.1:{p}"
                           for n, p in zip(self.names, self.peer_ports))
        data = os.path.join(self.root, self.names[i])
        log = open(os.path.join(self.root, f"{self.names[i]}.log"), "ab")
        self.procs[i] = subprocess.Popen(
            [ETCD, "--name", self.names[i], "--data-dir", data,
             "--listen-client-urls", f"https://127.0.0.1:{self.client_ports[i]}",
             "--advertise-client-urls", f"https://127.0.0.1:{self.client_ports[i]}",
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
             "--initial-cluster", initial, "--initial-cluster-state", state,
             "--initial-cluster-token", "k8py-test",
             "--cert-file", self.server_cert, "--key-file", self.server_key,
             "--trusted-ca-file", self.cafile, "--client-cert-auth",
             # a fast election (the default 1 s makes leader-loss tests slow)
             "--heartbeat-interval", "50", "--election-timeout", "500",
             "--logger", "zap", "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def etcdctl(self, *args: str, endpoints: str | None = None) -> str:
        env = {**os.environ, "ETCDCTL_API": "3"}
        return subprocess.run(
            ["etcdctl", "--endpoints", endpoints or self.endpoints, "--cacert", self.cafile,
             "--cert", self.certfile, "--key", self.keyfile, "--command-timeout", "5s", *args],
            capture_output=True, text=True, env=env, check=True, timeout=30).stdout

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every running member answers and the cluster has a leader."""
        deadline = time.monotonic() + timeout
        running = ",".join(f"https://127.0.0.1:{self.client_ports[i]}" for i in self.procs)
        while True:
            for i, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"etcd {self.names[i]} exited: see {self.root}")
            try:
                self.etcdctl("endpoint", "health", endpoints=running)
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd cluster not healthy: see {self.root}") from None
                time.sleep(0.1)

    def kill(self, i: int) -> None:
        proc = self.procs.pop(i)
        proc.kill()
        proc.wait(timeout=10)

    def leader(self) -> int:
        """Index of the member that is leader now."""
        out = self.etcdctl("endpoint", "status", "-w", "json")
        import json

        for status in json.loads(out):
            if status["Status"]["header"]["member_id"] == status["Status"]["leader"]:
                port = int(status["Endpoint"].rsplit(":", 1)[1])
                return self.client_ports.index(port)
        raise RuntimeError("no leader")

    def stop(self) -> None:
        for i in list(self.procs):
            proc = self.procs.pop(i)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
