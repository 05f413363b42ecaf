"""Logs, exec, attach and port-forward end to end, with the real kubectl 1.32 and the official
Python client: client → API server (pods/log, exec, attach, portforward) → kubelet HTTPS
server → containerd's stream server → runc.

Everything runs inside a network namespace the test creates (this thread enters it before
anything starts): containerd supervised by `run_containerd`, the API
server (in this event loop, memory store, real certificates) and the kubelet server (in this
loop, on 127.0.0.1, with its serving certificate and the API server's kubelet client
certificate from `pki`). Pods are driven directly through the CRI (sandbox + busybox
containers, with the kubelet's labels and log layout), and their Pod objects, bound to a Node
whose kubelet endpoint is the test's kubelet server, carry the status a kubelet would write.
A second Node with port 0 stands for a simulated node.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import fcntl
import os
import pty
import re
import shutil
import signal
import socket
import struct
import subprocess
import termios
import uuid
from typing import Any

import pytest
import pytest_asyncio

from k8py.agent import cgroups
from k8py.agent.config import AgentConfig
from k8py.agent.containerd import run_containerd, socket_path
from k8py.agent.kubelet import server as kubelet_server
from k8py.api import timestamps
from k8py.api.resources import Registry
from k8py.client.client import Client
from k8py.net.cni import write_cni_config
from k8py.runtime import cri_pb2 as pb
from k8py.runtime.cri import CriClient
from k8py.runtime.images import BUSYBOX_IMAGE, build_busybox_image, import_bytes
from k8py.server import pki
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver.authn import TokenFile
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.apiserver.podproxy import KubeletClient
from k8py.server.daemon import bootstrap
from k8py.server.store import open_backend
from tests.conftest import eventually
from tests.e2e.conftest import find_kubectl

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("containerd"), reason="needs containerd"),
    pytest.mark.asyncio(loop_scope="module"),
]

NODE = "node1"
POD_CIDR = "10.88.0.0/24"
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def netns(name: str):
    """Create netns `name` and move this thread into it (processes and threads started from
    it follow); back out and delete it after."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(target)
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield
        finally:
            libc.setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
        subprocess.run(["ip", "netns", "delete", name], check=False)


def leftover_cleanup(data_dir: str, sock: str) -> None:
    """Kill shims serving this containerd and unmount anything left under data_dir."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"-address" in args and sock.encode() in args:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for mount in sorted((m for m in mounts if m.startswith(data_dir)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Env:
    root: str
    data_dir: str
    cri: CriClient
    client: Client
    registry: Registry
    kubeconfig: str
    kubectl_path: str
    pods: dict[str, dict[str, Any]]  # what the kubelet server sees

    @property
    def logs(self) -> str:
        return os.path.join(self.data_dir, "agent", "logs")

    def kubectl_args(self, *args: str) -> list[str]:
        return [self.kubectl_path, "--kubeconfig", self.kubeconfig, "--cache-dir",
                os.path.join(self.root, "cache"), *args]

    @property
    def kubectl_env(self) -> dict[str, str]:
        return {**os.environ, "HOME": self.root, "KUBECONFIG": self.kubeconfig}

    async def kubectl(self, *args: str, input: bytes | None = None,
                      timeout: float = 30) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.kubectl_args(*args), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=self.kubectl_env)
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"kubectl {' '.join(args)} did not finish in {timeout}s")
        return proc.returncode, out.decode(), err.decode()

    def resource(self, plural: str):
        return self.registry.get("", "v1", plural)

    async def run_pod(self, name: str, containers: list[dict[str, Any]], *,
                      start: bool = True) -> dict[str, Any]:
        """A bound Pod object and, with `start`, its sandbox and running containers."""
        spec_containers = [{"name": c["name"], "image": BUSYBOX_IMAGE,
                            "command": c["command"], "stdin": c.get("stdin", False),
                            "tty": c.get("tty", False)} for c in containers]
        pod = await self.client.create(self.resource("pods"), {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": c.get("node", NODE) if (c := containers[0]) else NODE,
                     "containers": spec_containers}})
        uid = pod["metadata"]["uid"]
        if not start:
            waiting = [{"name": c["name"], "image": BUSYBOX_IMAGE, "imageID": "",
                        "ready": False, "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}}}
                       for c in containers]
            return await self._set_status(pod, {"phase": "Pending",
                                                "containerStatuses": waiting})
        labels = {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "default",
                  "io.kubernetes.pod.uid": uid}
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
            hostname=name, log_directory=os.path.join(self.logs, f"default_{name}_{uid}"),
            labels=labels,
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroups.pod_cgroup_parent(uid)))
        sandbox = await self.cri.run_pod_sandbox(config)
        statuses = []
        for c in containers:
            container_id = await self.start_container(sandbox, config, c, 0)
            statuses.append({"name": c["name"], "image": BUSYBOX_IMAGE, "imageID": "",
                             "containerID": f"containerd://{container_id}", "ready": True,
                             "restartCount": 0, "started": True,
                             "state": {"running": {"startedAt": timestamps.now()}}})
        ip = (await self.cri.pod_sandbox_status(sandbox)).status.network.ip
        pod = await self._set_status(pod, {"phase": "Running", "podIP": ip,
                                           "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
                                           "containerStatuses": statuses})
        pod["_sandbox"] = (sandbox, config)
        return pod

    async def start_container(self, sandbox: str, config: pb.PodSandboxConfig,
                              c: dict[str, Any], restart: int) -> str:
        os.makedirs(os.path.join(config.log_directory, c["name"]), exist_ok=True)
        container = await self.cri.create_container(sandbox, pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=c["name"], attempt=restart),
            image=pb.ImageSpec(image=BUSYBOX_IMAGE), command=c["command"],
            labels={**config.labels, "io.kubernetes.container.name": c["name"]},
            log_path=f"{c['name']}/{restart}.log", stdin=c.get("stdin", False),
            stdin_once=c.get("stdin_once", False), tty=c.get("tty", False)), config)
        await self.cri.start_container(container)
        return container

    async def _set_status(self, pod: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        updated = await self.client.update_status(self.resource("pods"),
                                                  {**pod, "status": status})
        self.pods[pod["metadata"]["name"]] = updated
        return updated

    async def wait_exited(self, container_id: str) -> int:
        async def exited():
            status = (await self.cri.container_status(container_id)).status
            return status.state == pb.CONTAINER_EXITED and status
        return (await eventually(exited, timeout=20, interval=0.05,
                                 what=f"{container_id} exited")).exit_code

    async def restart(self, pod: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
        """The container's next run after the current one exited, as a kubelet restarts it."""
        sandbox, config = pod["_sandbox"]
        old = pod["status"]["containerStatuses"][0]
        old_id = old["containerID"].partition("://")[2]
        code = await self.wait_exited(old_id)
        restart = old["restartCount"] + 1
        new_id = await self.start_container(sandbox, config, c, restart)
        status = {**old, "containerID": f"containerd://{new_id}", "restartCount": restart,
                  "state": {"running": {"startedAt": timestamps.now()}},
                  "lastState": {"terminated": {"exitCode": code, "reason": "Error",
                                               "containerID": old["containerID"]}}}
        updated = await self._set_status(
            {k: v for k, v in pod.items() if k != "_sandbox"},
            {**pod["status"], "containerStatuses": [status]})
        updated["_sandbox"] = (sandbox, config)
        return updated


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("streaming"))
    data_dir = os.path.join(root, "data")
    write_cni_config(os.path.join(data_dir, "agent", "etc", "cni", "net.d"), POD_CIDR,
                     ipam_data_dir=os.path.join(data_dir, "agent", "cni", "networks"))
    sock = socket_path(data_dir)
    tasks: list[asyncio.Task] = []
    with netns(f"k8py-e2e-{uuid.uuid4().hex[:8]}"):
        runtime_ready = asyncio.Event()
        tasks.append(asyncio.create_task(run_containerd(data_dir, runtime_ready)))
        cri = CriClient(sock)
        store = None
        try:
            await asyncio.wait_for(runtime_ready.wait(), 60)
            await import_bytes(await asyncio.to_thread(build_busybox_image), sock)

            server_dir = os.path.join(data_dir, "server")
            os.makedirs(server_dir, mode=0o700)
            certs = pki.ensure_pki(server_dir, cluster_domain="cluster.local",
                                   service_ip="10.43.0.1")
            tokens = TokenFile.ensure(os.path.join(server_dir, "cred", "tokens"),
                                      pki.ADMIN_USER, (pki.ADMIN_GROUP,))
            store = open_backend("memory://", data_dir)
            await store.start()
            registry = Registry()
            await bootstrap(store, registry)
            app = apiserver.make_app(store, tokens, registry, kubelet_client=KubeletClient(
                *pki.ensure_kubelet_client(certs), certs.ca_cert))
            api_port, kubelet_port = free_port(), free_port()
            api_ready, kubelet_ready = asyncio.Event(), asyncio.Event()
            tasks.append(asyncio.create_task(apiserver.serve(
                app, "127.0.0.1", api_port, apiserver.tls_context(
                    certs.serving_cert, certs.serving_key, certs.ca_cert), api_ready)))
            kubeconfig = os.path.join(root, "kubeconfig.yaml")
            pki.write_kubeconfig(certs, kubeconfig, f"https://127.0.0.1:{api_port}", 0o600)

            cert, key = pki.ensure_kubelet_serving(certs, os.path.join(data_dir, "agent"), NODE,
                                                   ("127.0.0.1",))
            config = AgentConfig(data_dir=data_dir, node_name=NODE, node_ip="127.0.0.1",
                                 kubelet_port=kubelet_port, tls_cert=cert, tls_key=key,
                                 client_ca=certs.ca_cert)
            pods: dict[str, dict[str, Any]] = {}
            tasks.append(asyncio.create_task(kubelet_server.serve(
                config, cri, lambda: list(pods.values()), kubelet_ready, host="127.0.0.1")))
            await asyncio.wait_for(asyncio.gather(api_ready.wait(), kubelet_ready.wait()), 10)

            client = Client(InProcessTransport(app[apiserver.REST_KEY]))
            nodes = registry.get("", "v1", "nodes")
            for name, port in ((NODE, kubelet_port), ("simulated", 0)):
                node = await client.create(nodes, {"apiVersion": "v1", "kind": "Node",
                                                   "metadata": {"name": name}})
                await client.update_status(nodes, {**node, "status": {
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
            yield Env(root, data_dir, cri, client, registry, kubeconfig, find_kubectl(), pods)
        finally:
            with contextlib.suppress(Exception):
                for sandbox in await cri.list_pod_sandbox():
                    await cri.stop_pod_sandbox(sandbox.id)
                    await cri.remove_pod_sandbox(sandbox.id)
                    cgroups.remove_pod_cgroups(sandbox.metadata.uid)
            await cri.close()
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if store is not None:
                await store.close()
            leftover_cleanup(data_dir, sock)


LOOP = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done"


async def test_logs_tail_since_timestamps_follow_and_previous(env):
    await env.run_pod("counter", [{"name": "main", "command": ["sh", "-c", LOOP]}])

    async def logged_lines():
        code, out, _ = await env.kubectl("logs", "counter")
        return code == 0 and out.count("\n") >= 5 and out
    out = await eventually(logged_lines, timeout=20, interval=0.2, what="5 lines logged")
    assert out.startswith("line 0\nline 1\n")

    code, out, err = await env.kubectl("logs", "counter", "--tail=2")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and int(lines[1].split()[1]) == int(lines[0].split()[1]) + 1

    code, out, err = await env.kubectl("logs", "counter", "--tail=1", "--timestamps")
    assert code == 0, err
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) line \d+\n", out)
    code, out, err = await env.kubectl("logs", "counter", "--since=1h", "-c", "main")
    assert code == 0 and out.startswith("line 0\n"), err
    code, out, err = await env.kubectl("logs", "counter", "--limit-bytes=9")
    assert (code, out) == (0, "line 0\nli"), err

    # -f streams new lines as they come
    proc = await asyncio.create_subprocess_exec(
        *env.kubectl_args("logs", "-f", "--tail=1", "counter"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env.kubectl_env)
    try:
        seen = []
        async with asyncio.timeout(20):
            while len(seen) < 5:
                seen.append((await proc.stdout.readline()).decode())
        numbers = [int(line.split()[1]) for line in seen]
        assert numbers == list(range(numbers[0], numbers[0] + 5)), seen
    finally:
        proc.kill()
        await proc.wait()

    # -f ends when the container exits; --previous reads the run before a restart
    first = {"name": "main", "command": ["sh", "-c", "echo first run; sleep 0.5; echo bye; "
                                                     "exit 1"]}
    pod = await env.run_pod("restarter", [first])
    code, out, err = await env.kubectl("logs", "-f", "restarter", timeout=30)
    assert (code, out) == (0, "first run\nbye\n"), err
    code, _, err = await env.kubectl("logs", "--previous", "restarter")
    assert code != 0 and 'previous terminated container "main" in pod "restarter" not found' \
        in err
    await env.restart(pod, {"name": "main", "command": ["sh", "-c", "echo second run; sleep 1000"]})
    code, out, err = await env.kubectl("logs", "--previous", "restarter")
    assert (code, out) == (0, "first run\nbye\n"), err

    async def second():
        code, out, _ = await env.kubectl("logs", "restarter")
        return out == "second run\n"
    await eventually(second, timeout=10, interval=0.2, what="the current run's log")


async def test_exec_with_and_without_tty_and_exit_codes(env):
    await env.run_pod("shell", [{"name": "main", "command": ["sleep", "1000"]}])
    code, out, err = await env.kubectl("exec", "shell", "--", "echo", "hello", "world")
    assert (code, out) == (0, "hello world\n"), err
    code, out, err = await env.kubectl("exec", "shell", "--", "sh", "-c",
                                       "echo out; echo err >&2; exit 3")
    assert (code, out) == (3, "out\n") and "err\n" in err, err
    code, out, err = await env.kubectl("exec", "-i", "shell", "--", "sh", "-c", "cat; echo done",
                                       input=b"piped in\n")
    assert (code, out) == (0, "piped in\ndone\n"), err

    # a terminal: kubectl sends its size (a resize message, which may come a moment after
    # the shell starts), the shell sees a tty; the exit code comes back
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 99, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        *env.kubectl_args("exec", "-it", "shell", "--", "sh", "-c",
                          "tty; for i in 1 2 3 4 5 6 7 8 9 10; do s=$(stty size 2>/dev/null); "
                          "[ \"$s\" = \"33 99\" ] && break; sleep 0.2; done; echo size $s; "
                          "exit 4"),
        stdin=slave, stdout=slave, stderr=slave, env=env.kubectl_env)
    os.close(slave)
    try:
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    output = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(master, 65536):
            output += chunk
    os.close(master)
    text = output.decode(errors="replace")
    assert code == 4, text
    assert "/dev/pts/" in text and "size 33 99" in text, text


async def test_attach(env):
    await env.run_pod("reader", [{"name": "main", "stdin": True, "stdin_once": True,
                                  "command": ["sh", "-c", "read line; echo got $line"]}])
    code, out, err = await env.kubectl("attach", "-i", "reader", input=b"hello\n")
    assert code == 0, err
    assert "got hello" in out, (out, err)


HTTPD = "mkdir -p /www && echo hello from httpd > /www/index.html && httpd -f -p 8080 -h /www"


async def http_get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_kubectl_port_forward(env):
    await env.run_pod("web", [{"name": "main", "command": ["sh", "-c", HTTPD]}])
    local = free_port()
    proc = await asyncio.create_subprocess_exec(
        *env.kubectl_args("port-forward", "pod/web", f"{local}:8080"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env.kubectl_env)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert f"Forwarding from 127.0.0.1:{local} -> 8080" in line.decode(), line

        async def fetched():
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                return await http_get(local)
        response = await eventually(fetched, timeout=20, interval=0.2, what="httpd answers")
        assert response.startswith(b"HTTP/1.") and b" 200 " in response.split(b"\r\n")[0]
        assert response.endswith(b"hello from httpd\n")
        assert (await http_get(local)).endswith(b"hello from httpd\n")  # a second connection
    finally:
        proc.kill()
        await proc.wait()


def _python_client(env: Env):
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=env.kubeconfig)
    return client.CoreV1Api(api_client)


async def test_python_client_exec_and_port_forward(env):
    from kubernetes.stream import portforward, stream

    if "web" not in env.pods:
        await env.run_pod("web", [{"name": "main", "command": ["sh", "-c", HTTPD]}])
    if "shell" not in env.pods:
        await env.run_pod("shell", [{"name": "main", "command": ["sleep", "1000"]}])
    api = _python_client(env)

    def run_exec():
        out = stream(api.connect_get_namespaced_pod_exec, "shell", "default",
                     command=["sh", "-c", "echo from python"], stderr=True, stdin=False,
                     stdout=True, tty=False)
        resp = stream(api.connect_get_namespaced_pod_exec, "shell", "default",
                      command=["sh", "-c", "echo partial; exit 7"], stderr=True, stdin=False,
                      stdout=True, tty=False, _preload_content=False)
        resp.run_forever(timeout=20)
        return out, resp.returncode, resp.read_stdout()

    out, code, partial = await asyncio.wait_for(asyncio.to_thread(run_exec), 60)
    assert out == "from python\n"
    assert code == 7

    def run_port_forward():
        pf = portforward(api.connect_get_namespaced_pod_portforward, "web", "default",
                         ports="8080")
        sock = pf.socket(8080)
        sock.setblocking(True)
        sock.settimeout(10)
        sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
        pf.close()
        return data

    async def forwarded():
        with contextlib.suppress(Exception):
            return await asyncio.wait_for(asyncio.to_thread(run_port_forward), 30)
    data = await eventually(forwarded, timeout=30, interval=0.5, what="python port-forward")
    assert data.startswith(b"HTTP/1.") and data.endswith(b"hello from httpd\n"), data


async def test_errors_are_statuses_not_hangs(env):
    await env.run_pod("creating", [{"name": "main", "command": ["true"]}], start=False)
    code, _, err = await env.kubectl("logs", "creating", timeout=20)
    assert code != 0 and 'container "main" in pod "creating" is waiting to start: ' \
        'ContainerCreating' in err, err
    code, _, err = await env.kubectl("exec", "creating", "--", "true", timeout=20)
    assert code != 0 and "is waiting to start: ContainerCreating" in err, err
    code, _, err = await env.kubectl("logs", "creating", "-c", "nope", timeout=20)
    assert code != 0 and "container nope is not valid for pod creating" in err, err
    code, _, err = await env.kubectl("logs", "missing", timeout=20)
    assert code != 0 and 'pods "missing" not found' in err, err

    await env.run_pod("elsewhere", [{"name": "main", "command": ["true"], "node": "simulated"}],
                      start=False)
    code, _, err = await env.kubectl("logs", "elsewhere", timeout=20)
    assert code != 0 and 'node "simulated" has no kubelet endpoint' in err, err
    code, _, err = await env.kubectl("exec", "elsewhere", "--", "true", timeout=20)
    assert code != 0 and 'node "simulated" has no kubelet endpoint' in err, err
