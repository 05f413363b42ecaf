"""`k8py lab`: a multi-node cluster on one host, without VMs or Docker.

A lab is a server (with its embedded agent), or several (`--servers N`), and N agents, each
in its own network namespace (`k8py-lab-<lab>-<node>`) with its own address on a bridge the
lab adds to the host, its own data dir (`<lab dir>/<node>`), its own containerd and its pods'
cgroups. The agents join the server with its token, as real agents do. The host gets the
bridge's first address, so the API, NodePorts and LoadBalancer addresses answer from the
host. Everything a lab made is recorded in `<lab dir>/lab.json` (lab dir: `/var/lib/k8py-lab/<name>`), which `down` undoes:
processes (theirs and their containerd shims), mounts under the lab dir, pod cgroups,
namespaces, links, the host's address; nftables tables and routes go with the namespaces.

Addresses: lab number n (the lowest free) gets 172.30.n.0/24; the host is .1, the server .2,
agent-1 .3 and so on. Two labs with different names coexist.

High availability (`--servers N`, N > 1): servers `server-1`..`server-N` (.2 onwards, the
agents after them); `server-1` starts the cluster on an embedded etcd (`--cluster-init`), the
others join it (`--server https://<server-1>:6443 --token ...`), as do the agents, which then
learn every server from the `kubernetes` endpoints. Each server writes its own kubeconfig
(`<lab dir>/kubeconfig-<server>`; `<lab dir>/kubeconfig` is server-1's). For failure tests,
`stop` (SIGTERM), `kill` (SIGKILL the k8py process and its etcd; its pods' shims stay),
`start` (the same command line again), `isolate` and `rejoin` (the node's bridge port down
and up: its namespace cut off the lab's network, and back) act on one node; lab.json records
its pid and whether it is isolated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from k8py import hostcleanup

LAB_ROOT = "/var/lib/k8py-lab"
SUBNET = "172.30.{n}.0/24"
API_PORT = 6443


class LabError(Exception):
    pass


@dataclasses.dataclass
class LabNode:
    name: str
    role: str  # server or agent
    ip: str
    netns: str
    host_link: str
    pid: int = 0
    isolated: bool = False


@dataclasses.dataclass
class LabState:
    name: str
    number: int
    bridge: str
    host_ip: str
    backend: str
    nodes: list[LabNode]
    resolv_conf: str = ""  # the nodes' upstream resolvers ("": the host's)

    @property
    def server(self) -> LabNode:
        return next(n for n in self.nodes if n.role == "server")


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done


def _nsenter(netns: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{netns}"]


class Lab:
    def __init__(self, name: str = "default", root: str = LAB_ROOT):
        if not name.replace("-", "").isalnum() or len(name) > 20:
            raise LabError(f"lab name {name!r}: letters, digits and '-', at most 20")
        self.name, self.root = name, root
        self.dir = os.path.join(root, name)
        self.state_file = os.path.join(self.dir, "lab.json")
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")

    # --- state ----------------------------------------------------------------------------

    def load(self) -> LabState | None:
        try:
            with open(self.state_file, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        data["nodes"] = [LabNode(**node) for node in data["nodes"]]
        return LabState(**data)

    def _save(self, state: LabState) -> None:
        tmp = self.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(state), f, indent=2)
        os.replace(tmp, self.state_file)

    def _free_number(self) -> int:
        used = set()
        if os.path.isdir(self.root):
            for other in os.listdir(self.root):
                state = Lab(other, self.root).load() if other != self.name else None
                if state is not None:
                    used.add(state.number)
        return next(n for n in range(256) if n not in used)

    # --- up -------------------------------------------------------------------------------

    def up(self, agents: int = 2, backend: str = "vxlan", images: str | None = None,
           progress: Callable[[str], None] = print, timeout: float = 180.0,
           resolv_conf: str | None = None, servers: int = 1) -> LabState:
        if self.load() is not None:
            raise LabError(f"lab {self.name} is up already (k8py lab down --name {self.name})")
        for tool in ("ip", "nsenter", "containerd", "runc"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed (./install.sh installs it)")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        number = self._free_number()
        base = SUBNET.format(n=number).rsplit(".", 1)[0]
        names = ["server"] if servers == 1 else [f"server-{i}" for i in range(1, servers + 1)]
        nodes = [LabNode(name, "server", f"{base}.{i + 2}", f"k8py-lab-{self.name}-{name}",
                         f"k8l{number}s{i or ''}") for i, name in enumerate(names)]
        for i in range(1, agents + 1):
            nodes.append(LabNode(f"agent-{i}", "agent", f"{base}.{i + 1 + servers}",
                                 f"k8py-lab-{self.name}-agent-{i}", f"k8l{number}a{i}"))
        state = LabState(self.name, number, f"k8lab{number}", f"{base}.1", backend, nodes,
                         os.path.abspath(resolv_conf) if resolv_conf else "")
        self._save(state)
        try:
            progress(f"lab {self.name}: network {SUBNET.format(n=number)} on {state.bridge}")
            self._network(state)
            archive = self._busybox_archive(progress)
            for node in nodes:
                self._images(node, archive, images)
            progress(f"starting {state.server.name}"
                     + (" (a new cluster on an embedded etcd)" if servers > 1 else ""))
            self._start(state, state.server)
            self._wait(lambda: os.path.exists(self.kubeconfig), timeout, "the server's kubeconfig")
            self._wait(lambda: os.path.exists(self._token_file(state)), timeout, "the join token")
            for node in nodes[1:]:
                progress(f"starting {node.name} (joins with the token)")
                self._start(state, node)
                if node.role == "server":  # etcd adds one learner at a time
                    self._wait(lambda n=node: os.path.exists(self.server_kubeconfig(n.name)),
                               timeout, f"{node.name}'s kubeconfig")
            self._save(state)
            progress(f"waiting for {len(nodes)} nodes to be Ready")
            asyncio.run(self._wait_ready([n.name for n in nodes], timeout))
        except BaseException:
            progress("failed: taking the lab down")
            self.down(progress=lambda _: None)
            raise
        progress(f"lab {self.name} is up: export KUBECONFIG={self.kubeconfig}")
        return state

    def _network(self, state: LabState) -> None:
        _run("ip", "link", "add", state.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{state.host_ip}/24", "dev", state.bridge)
        _run("ip", "link", "set", state.bridge, "up")
        for node in state.nodes:
            _run("ip", "netns", "add", node.netns)
            _run(*_nsenter(node.netns), "ip", "link", "set", "lo", "up")
            _run("ip", "link", "add", node.host_link, "type", "veth", "peer", "name",
                 "eth0", "netns", node.netns)
            _run("ip", "link", "set", node.host_link, "master", state.bridge, "up")
            _run(*_nsenter(node.netns), "ip", "addr", "add", f"{node.ip}/24", "dev", "eth0")
            _run(*_nsenter(node.netns), "ip", "link", "set", "eth0", "up")
            _run(*_nsenter(node.netns), "ip", "route", "add", "default", "via", state.host_ip)

    def _busybox_archive(self, progress) -> str:
        path = os.path.join(self.dir, "busybox.tar")
        if not os.path.exists(path):
            from k8py.runtime.images import build_busybox_image

            progress("building the busybox image")
            with open(path, "wb") as f:
                f.write(build_busybox_image())
        return path

    def _node_dir(self, node: LabNode) -> str:
        return os.path.join(self.dir, node.name)

    def _token_file(self, state: LabState) -> str:
        return os.path.join(self._node_dir(state.server), "server", "token")

    def _token(self, state: LabState) -> str:
        with open(self._token_file(state), encoding="utf-8") as f:
            return f.read().strip()

    def server_kubeconfig(self, name: str) -> str:
        """The kubeconfig server `name` wrote (its own address)."""
        state = self._require()
        if name == state.server.name:
            return self.kubeconfig
        return os.path.join(self.dir, f"kubeconfig-{name}")

    def _images(self, node: LabNode, archive: str, extra: str | None) -> None:
        target = os.path.join(self._node_dir(node), "agent", "images")
        os.makedirs(target, mode=0o755, exist_ok=True)
        shutil.copy(archive, os.path.join(target, "busybox.tar"))
        if extra:
            for name in sorted(os.listdir(extra)):
                shutil.copy(os.path.join(extra, name), os.path.join(target, name))

    def _start(self, state: LabState, node: LabNode) -> None:
        command = [sys.executable, "-m", "k8py"]
        common = ["--data-dir", self._node_dir(node), "--node-name", node.name,
                  "--node-ip", node.ip, "--flannel-backend", state.backend]
        if state.resolv_conf:
            common += ["--resolv-conf", state.resolv_conf]
        first = state.server
        join = ["--server", f"https://{first.ip}:{API_PORT}", "--token", self._token(state)] \
            if node is not first else []
        if node.role == "server":
            servers = sum(n.role == "server" for n in state.nodes)
            kubeconfig = self.kubeconfig if node is first else \
                os.path.join(self.dir, f"kubeconfig-{node.name}")
            command += ["server", *common, "--bind-address", node.ip,
                        "--write-kubeconfig", kubeconfig]
            if servers > 1:
                command += join or ["--cluster-init"]
        else:
            command += ["agent", *common, *join]
        log = open(os.path.join(self.dir, f"{node.name}.log"), "ab")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        os.environ.get("PYTHONPATH", "")] if p)}
        proc = subprocess.Popen([*_nsenter(node.netns), *command], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
        log.close()
        node.pid = proc.pid

    @staticmethod
    def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise LabError(f"no {what} after {timeout:.0f} s (see the logs in the lab dir)")
            time.sleep(0.25)

    async def _wait_ready(self, names: list[str], timeout: float) -> None:
        from k8py.api.resources import builtin
        from k8py.client.client import Client
        from k8py.client.http import HttpTransport

        client = Client(HttpTransport.from_kubeconfig(self.kubeconfig, "k8py-lab"))
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    listed = await client.list(builtin("v1", "nodes"))
                    ready = {n["metadata"]["name"] for n in listed["items"]
                             if any(c.get("type") == "Ready" and c.get("status") == "True"
                                    for c in (n.get("status") or {}).get("conditions") or [])}
                    if set(names) <= ready:
                        return
                except Exception:  # the server is still starting
                    pass
                if time.monotonic() > deadline:
                    raise LabError(f"nodes not Ready after {timeout:.0f} s (see the logs in "
                                   f"{self.dir})")
                await asyncio.sleep(0.5)
        finally:
            await client.close()

    # --- using it --------------------------------------------------------------------------

    def status(self) -> list[tuple[str, str, str, bool, bool]]:
        """(node, role, address, its process alive, isolated) per node."""
        state = self._require()
        return [(n.name, n.role, n.ip, hostcleanup.alive(n.pid), n.isolated)
                for n in state.nodes]

    def node(self, name: str) -> LabNode:
        return self._find(self._require(), name)

    def _find(self, state: LabState, name: str) -> LabNode:
        for node in state.nodes:
            if node.name == name:
                return node
        raise LabError(f"no node {name!r} in lab {self.name} "
                       f"({', '.join(n.name for n in state.nodes)})")

    def exec_command(self, name: str, command: list[str]) -> list[str]:
        return [*_nsenter(self.node(name).netns), *command]

    def restart(self, name: str) -> None:
        """Stop node `name`'s k8py process (SIGKILL, as a crash would; its containerd and
        pods stay) and start it again."""
        state = self._require()
        node = self._find(state, name)
        if node.pid and hostcleanup.alive(node.pid):
            os.kill(node.pid, signal.SIGKILL)
        self._start(state, node)
        self._save(state)

    # --- failures, as an operator causes them ------------------------------------------------

    def stop(self, name: str, timeout: float = 60.0) -> None:
        """SIGTERM node `name`'s k8py process and wait for it to end (its pods stay)."""
        node = self._find(self._require(), name)
        if node.pid and hostcleanup.alive(node.pid):
            hostcleanup.terminate([node.pid], timeout=timeout)

    def kill(self, name: str) -> None:
        """SIGKILL node `name`'s k8py process and its etcd, as a crash of the machine's
        control plane would; its pods' shims stay."""
        node = self._find(self._require(), name)
        pids = [node.pid] if node.pid else []
        etcd_pid = os.path.join(self._node_dir(node), "server", "db", "etcd.pid")
        with contextlib.suppress(OSError, ValueError), open(etcd_pid, encoding="ascii") as f:
            pid = int(f.read())
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"etcd" in cmdline.read().split(b"\0", 1)[0]:
                    pids.append(pid)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self._wait(lambda: not any(hostcleanup.alive(p) for p in pids), 30,
                   f"end of {name}'s processes")

    def start(self, name: str) -> None:
        """Start node `name`'s k8py process again, with the command line it had."""
        state = self._require()
        node = self._find(state, name)
        if node.pid and hostcleanup.alive(node.pid):
            raise LabError(f"{name} is running (pid {node.pid})")
        self._start(state, node)
        self._save(state)

    def isolate(self, name: str, isolated: bool = True) -> None:
        """Cut node `name` off the lab's network (its bridge port down), or rejoin it."""
        state = self._require()
        node = self._find(state, name)
        _run("ip", "link", "set", node.host_link, "down" if isolated else "up")
        node.isolated = isolated
        self._save(state)

    def rejoin(self, name: str) -> None:
        self.isolate(name, isolated=False)

    def load_images(self, files: list[str]) -> None:
        state = self._require()
        for node in state.nodes:
            target = os.path.join(self._node_dir(node), "agent", "images")
            for path in files:
                shutil.copy(path, os.path.join(target, os.path.basename(path)))

    def _require(self) -> LabState:
        state = self.load()
        if state is None:
            raise LabError(f"no lab named {self.name} (k8py lab up --name {self.name})")
        return state

    # --- down -----------------------------------------------------------------------------

    def down(self, progress: Callable[[str], None] = print) -> None:
        state = self.load()
        if state is None:
            if os.path.isdir(self.dir):
                shutil.rmtree(self.dir, ignore_errors=True)
            return
        progress(f"stopping lab {self.name}")
        node_dirs = [self._node_dir(n) for n in state.nodes]
        uids = hostcleanup.pod_uids(node_dirs)
        hostcleanup.kill_pod_processes(uids)  # pods outlive their agent by design: not here
        running = [n.pid for n in state.nodes if n.pid and hostcleanup.alive(n.pid)]
        hostcleanup.terminate(running, group=True)
        hostcleanup.kill_holding(self.dir)
        hostcleanup.kill_pod_processes(uids)
        hostcleanup.unmount_under(self.dir)
        hostcleanup.remove_pod_cgroups(uids)
        for node in state.nodes:
            _run("ip", "netns", "delete", node.netns, check=False)
            _run("ip", "link", "delete", node.host_link, check=False)
        _run("ip", "link", "delete", state.bridge, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        progress(f"lab {self.name} is down")
