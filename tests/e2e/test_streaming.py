"""Logs, exec, attach and port-forward end to end, with the real kubectl 1.32 and the official
Python client: client → API server (pods/log, exec, attach, portforward) → kubelet HTTPS
server → containerd's stream server → runc.

`k8py server` with its embedded agent (its own containerd, the CNI plugins) runs as a child
inside a network namespace the test creates (`tests.e2e.netns`, which states the rules): this
thread enters it (setns, network only, so /sys and the cgroup mounts stay as they are) before
anything starts, and the server, kubectl and the Python client's threads inherit it. The
node's address is one end of a veth pair in the namespace. Pods are created with kubectl and
run by the real pod workers. A second Node object without a kubelet endpoint stands for a
simulated node. At the end the pods are deleted, the server stopped (it stops containerd),
anything left holding the data dir killed, and the namespace removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
from typing import Any

import pytest
import pytest_asyncio

from k8py.runtime.images import BUSYBOX_IMAGE, build_busybox_image
from tests.conftest import eventually
from tests.e2e import netns
from tests.e2e.conftest import find_kubectl, free_port

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("containerd"), reason="needs containerd"),
    pytest.mark.asyncio(loop_scope="module"),
]

NODE = "stream-node"
NODE_IP = "10.99.1.2"


class Env:
    def __init__(self, root: str):
        self.root = root
        self.data_dir = os.path.join(root, "data")
        self.kubeconfig = os.path.join(root, "kubeconfig.yaml")
        self.kubectl_path = find_kubectl()
        self.proc: asyncio.subprocess.Process | None = None

    def kubectl_args(self, *args: str) -> list[str]:
        return [self.kubectl_path, "--kubeconfig", self.kubeconfig, "--cache-dir",
                os.path.join(self.root, "cache"), *args]

    @property
    def kubectl_env(self) -> dict[str, str]:
        return {**os.environ, "HOME": self.root, "KUBECONFIG": self.kubeconfig}

    def server_log(self) -> str:
        with contextlib.suppress(OSError), open(os.path.join(self.root, "server.log")) as f:
            return f.read()[-4000:]
        return ""

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

    async def get(self, kind: str, name: str) -> dict[str, Any]:
        code, out, _ = await self.kubectl("get", kind, name, "-o", "json")
        return json.loads(out) if code == 0 else {}

    async def apply(self, manifest: dict[str, Any]) -> None:
        code, _, err = await self.kubectl("apply", "-f", "-", input=json.dumps(manifest).encode())
        assert code == 0, err

    async def run_pod(self, name: str, command: str, *, wait: bool = True,
                      **container: Any) -> dict[str, Any]:
        """A busybox pod running `sh -c command`; with `wait`, once it is Running."""
        await self.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                          "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                              "name": "main", "image": container.pop("image", BUSYBOX_IMAGE),
                              "imagePullPolicy": "IfNotPresent",
                              "command": ["sh", "-c", command], **container}]}})
        if not wait:
            return await self.get("pod", name)

        async def running():
            pod = await self.get("pod", name)
            statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
            return (pod.get("status") or {}).get("phase") == "Running" and \
                "running" in (statuses[0].get("state") or {}) and pod
        return await eventually(running, timeout=60, interval=0.2, what=f"pod {name} Running")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    e = Env(str(tmp_path_factory.mktemp("streaming")))
    with netns.entered() as name:
        log = open(os.path.join(e.root, "server.log"), "a")
        try:
            netns.add_node_address(name, NODE_IP)
            images = os.path.join(e.data_dir, "agent", "images")
            os.makedirs(images)
            archive = await asyncio.to_thread(build_busybox_image)
            with open(os.path.join(images, "busybox.tar"), "wb") as f:
                f.write(archive)
            e.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "k8py", "server", "--data-dir", e.data_dir,
                "--bind-address", "127.0.0.1", "--https-listen-port", "6443",
                "--write-kubeconfig", e.kubeconfig, "--node-name", NODE, "--node-ip", NODE_IP,
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": os.getcwd()})

            async def ready():
                if e.proc.returncode is not None:
                    raise AssertionError("server exited: " + e.server_log())
                if not os.path.exists(e.kubeconfig):
                    return False
                node = await e.get("node", NODE)
                return any(c["type"] == "Ready" and c["status"] == "True"
                           for c in (node.get("status") or {}).get("conditions") or [])
            await eventually(ready, timeout=90, interval=0.25, what="node Ready")
            # a node without a kubelet, as simulated nodes are (no daemonEndpoints)
            code, _, err = await e.kubectl("create", "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": "simulated"}}).encode())
            assert code == 0, err
            yield e
        finally:
            try:
                if e.proc is not None and e.proc.returncode is None:
                    with contextlib.suppress(Exception):
                        # no kubelet will confirm the simulated node's pod gone
                        await e.kubectl("delete", "pod", "elsewhere", "--force",
                                        "--grace-period=0", "--ignore-not-found")
                        await e.kubectl("delete", "pods", "--all", "--grace-period=1",
                                        "--wait=true", timeout=60)
                    e.proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(e.proc.wait(), 30)
                    except asyncio.TimeoutError:
                        e.proc.kill()
                        await e.proc.wait()
            finally:
                netns.kill_leftovers(e.data_dir)
                log.close()


LOOP = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done"


async def test_logs_tail_since_timestamps_follow_and_previous(env):
    await env.run_pod("counter", LOOP)

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
    await env.run_pod("restarter", "echo first run; sleep 2; echo bye; exit 1", wait=False)

    async def first_run():
        pod = await env.get("pod", "restarter")
        status = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
        return "running" in (status.get("state") or {}) and status.get("restartCount") == 0
    await eventually(first_run, timeout=60, interval=0.1, what="the first run")
    code, _, err = await env.kubectl("logs", "--previous", "restarter")
    assert code != 0 and 'previous terminated container "main" in pod "restarter" not found' \
        in err, err
    code, out, err = await env.kubectl("logs", "-f", "restarter", timeout=30)
    assert (code, out) == (0, "first run\nbye\n"), err

    async def restarted():
        pod = await env.get("pod", "restarter")
        status = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
        return status.get("restartCount", 0) >= 1 and \
            "terminated" in (status.get("lastState") or {})
    await eventually(restarted, timeout=60, interval=0.2, what="a restart")
    code, out, err = await env.kubectl("logs", "--previous", "restarter")
    assert (code, out) == (0, "first run\nbye\n"), err


async def test_exec_with_and_without_tty_and_exit_codes(env):
    await env.run_pod("shell", "sleep 1000")
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
    await env.run_pod("reader", "read line; echo got $line", stdin=True, stdinOnce=True)
    code, out, err = await env.kubectl("attach", "-i", "reader", input=b"hello\n")
    assert code == 0, err
    assert "got hello" in out, (out, err)


async def test_kubectl_debug_runs_an_ephemeral_container_in_the_target(env):
    """`kubectl debug -i --target`: the debug container joins the target's PID namespace (it
    sees its `sleep`), kubectl attaches to it, and its logs and status stay afterwards.
    kubectl's stdin stays open until the container is done: over containerd, an attach to a
    container without stdinOnce ends when the client's stdin does, as upstream."""
    await env.run_pod("debuggee", "exec sleep 3600")
    proc = await asyncio.create_subprocess_exec(
        *env.kubectl_args("debug", "debuggee", "-i", "--image=" + BUSYBOX_IMAGE,
                          "--image-pull-policy=IfNotPresent", "--target=main",
                          "--container=debugger", "--",
                          "sh", "-c", "read line; echo got $line; ps"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env.kubectl_env)
    async def type_hello() -> None:
        """A line on stdin once kubectl is attaching, again each second until the debug
        container read one (what reaches it before the attach is in place may be lost, as
        with a user typing early)."""
        while proc.returncode is None:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                proc.stdin.write(b"hello\n")
                await proc.stdin.drain()
            await asyncio.sleep(1.0)

    try:
        typing = asyncio.create_task(type_hello())
        out, err = await asyncio.wait_for(
            asyncio.gather(proc.stdout.read(), proc.stderr.read()), 90)
        await proc.wait()
        typing.cancel()
        await asyncio.gather(typing, return_exceptions=True)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out, err = out.decode(), err.decode()
    assert proc.returncode == 0, err
    assert "got hello" in out, (out, err)
    assert "sleep 3600" in out, out  # the target's process, seen from the debug container

    async def exited():
        pod = await env.get("pod", "debuggee")
        statuses = (pod.get("status") or {}).get("ephemeralContainerStatuses") or []
        return bool(statuses) and "terminated" in statuses[0]["state"] and statuses[0]
    status = await eventually(exited, timeout=30, interval=0.2, what="debugger exited")
    assert status["name"] == "debugger" and status["state"]["terminated"]["exitCode"] == 0
    code, out, err = await env.kubectl("logs", "debuggee", "-c", "debugger")
    assert code == 0 and "got hello" in out, (out, err)
    # never restarted; the pod's own container runs on
    pod = await env.get("pod", "debuggee")
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["ephemeralContainerStatuses"][0]["restartCount"] == 0


HTTPD = "mkdir -p /www && echo hello from httpd > /www/index.html && httpd -f -p 8080 -h /www"


async def http_get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_kubectl_port_forward(env):
    await env.run_pod("web", HTTPD)
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

    for name, command in (("web", HTTPD), ("shell", "sleep 1000")):
        if not await env.get("pod", name):
            await env.run_pod(name, command)
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
    await env.run_pod("creating", "true", image="k8py.local/nope:1", wait=False)
    code, _, err = await env.kubectl("logs", "creating", timeout=20)
    assert code != 0 and 'container "main" in pod "creating" is waiting to start' in err, err
    code, _, err = await env.kubectl("exec", "creating", "--", "true", timeout=20)
    assert code != 0 and 'container "main" in pod "creating" is waiting to start' in err, err
    code, _, err = await env.kubectl("logs", "creating", "-c", "nope", timeout=20)
    assert code != 0 and "container nope is not valid for pod creating" in err, err
    code, _, err = await env.kubectl("logs", "missing", timeout=20)
    assert code != 0 and 'pods "missing" not found' in err, err

    await env.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "elsewhere"},
                     "spec": {"nodeName": "simulated", "containers": [
                         {"name": "main", "image": BUSYBOX_IMAGE}]}})
    code, _, err = await env.kubectl("logs", "elsewhere", timeout=20)
    assert code != 0 and 'node "simulated" has no kubelet endpoint' in err, err
    code, _, err = await env.kubectl("exec", "elsewhere", "--", "true", timeout=20)
    assert code != 0 and 'node "simulated" has no kubelet endpoint' in err, err


# --- Services through the proxy's nftables rules (the same node, its own namespace) --------

ECHO = ("mkdir -p /www && hostname > /www/index.html && httpd -f -p 8080 -h /www")


async def _fetch(env: Env, pod: str, ip: str, port: int) -> tuple[int, str, str]:
    """GET / from inside `pod` with busybox nc (its static wget cannot resolve even an IP
    literal without NSS): (exit code, response body, stderr)."""
    code, out, err = await env.kubectl(
        "exec", pod, "--", "sh", "-c",
        f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}", timeout=20)
    return code, out.replace("\r", "").split("\n\n", 1)[-1].strip(), err


def _echo_pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "echo"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", ECHO]}]}}


async def test_services_reach_their_endpoints_and_refuse_without_any(env):
    for name in ("echo-a", "echo-b"):
        await env.apply(_echo_pod(name))
    await env.run_pod("client", "sleep 3600")
    await env.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
                     "spec": {"type": "NodePort", "selector": {"app": "echo"},
                              "ports": [{"port": 80, "targetPort": 8080}]}})
    await env.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nobody"},
                     "spec": {"selector": {"app": "nobody"}, "ports": [{"port": 81}]}})
    echo, nobody = await env.get("service", "echo"), await env.get("service", "nobody")
    cluster_ip, node_port = echo["spec"]["clusterIP"], echo["spec"]["ports"][0]["nodePort"]

    async def both_answered():
        seen = set()
        for _ in range(12):
            code, out, _ = await _fetch(env, "client", cluster_ip, 80)
            if code == 0:
                seen.add(out.strip())
        return seen >= {"echo-a", "echo-b"} and seen
    seen = await eventually(both_answered, timeout=60, interval=0.5,
                            what="both backends answering through the ClusterIP")
    assert seen == {"echo-a", "echo-b"}  # only the backends' own names, nothing else

    async def node_port_answers():
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(NODE_IP, node_port), 3)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data.split(b"\r\n\r\n", 1)[-1].strip().decode() in ("echo-a", "echo-b")
        return False
    await eventually(node_port_answers, timeout=30, interval=0.5,
                     what="the NodePort answering on the node's address")

    # no endpoints: refused at once, not a timeout
    started = asyncio.get_running_loop().time()
    code, out, err = await _fetch(env, "client", nobody["spec"]["clusterIP"], 81)
    assert code != 0 and "refused" in (out + err).lower(), (code, out, err)
    assert asyncio.get_running_loop().time() - started < 8
