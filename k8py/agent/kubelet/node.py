"""The Node object of this host: registration, the Lease heartbeat, status and conditions.

`NodeStatusReporter.run` registers the node (creating it, or taking over an existing Node of
the same name: labels merged, status replaced), then loops every `heartbeat` (10 s) seconds:

- renews the Lease `kube-node-lease/<node>` (40 s duration; the node lifecycle controller
  marks the node Unknown when it lapses);
- measures the host (memory, disk, PIDs) and the runtime (CRI Status), and patches the
  Node's status when a condition changed or `status_interval` (60 s) passed since the last
  report, so an idle node writes its status once a minute, not every 10 s.

Capacity is the host's: cpu from `os.cpu_count`, memory from /proc/meminfo, ephemeral-storage
from statvfs of the data dir, pods 110. Allocatable subtracts upstream's default hard eviction
thresholds (memory.available 100Mi, nodefs.available 10%). Pressure conditions use the same
thresholds (PIDs: fewer than 5% of pid_max left).

The pure parts (`capacity`, `conditions`, `node_labels`, `arch`) take what they need as
arguments and are unit tested; I/O (reading /proc, CRI, the API) is at the edges.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.resources import builtin
from k8py.client.client import Client

log = logging.getLogger(__name__)

NODES = builtin("v1", "nodes")
LEASES = builtin("coordination.k8s.io/v1", "leases")

KUBELET_VERSION = "v1.32.0+k8py"
MAX_PODS = 110
MEMORY_EVICTION = 100 * 1024 * 1024  # memory.available<100Mi
NODEFS_EVICTION = 0.10  # nodefs.available<10%
PID_EVICTION = 0.05
LEASE_SECONDS = 40

ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
          "armv7l": "arm", "armv6l": "arm", "armv8l": "arm", "arm": "arm"}


def arch(machine: str | None = None) -> str:
    """GOARCH-style name of the machine (`platform.machine()`)."""
    machine = (machine if machine is not None else platform.machine()).lower()
    return ARCHES.get(machine, machine)


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes per field."""
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        try:
            amount = int(parts[0])
        except ValueError:
            continue
        values[name.strip()] = amount * 1024 if parts[1:] == ["kB"] else amount
    return values


def read_file(path: str, default: str = "") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def os_image(os_release: str) -> str:
    """PRETTY_NAME from /etc/os-release text."""
    for line in os_release.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"').strip("'")
    return "Linux"


def capacity(cpus: int, memory_bytes: int, disk_bytes: int) -> dict[str, str]:
    return {"cpu": str(cpus), "memory": f"{memory_bytes // 1024}Ki",
            "ephemeral-storage": f"{disk_bytes // 1024}Ki", "pods": str(MAX_PODS),
            "hugepages-1Gi": "0", "hugepages-2Mi": "0"}


def allocatable(cpus: int, memory_bytes: int, disk_bytes: int) -> dict[str, str]:
    """Capacity minus the hard eviction thresholds, as upstream's kubelet reports it."""
    memory = max(0, memory_bytes - MEMORY_EVICTION)
    disk = int(disk_bytes * (1 - NODEFS_EVICTION))
    return {**capacity(cpus, memory, 0), "ephemeral-storage": str(disk)}


def node_labels(name: str, machine_arch: str, is_server: bool,
                extra: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """The labels the kubelet registers with. A server's `node-role.kubernetes.io/*` labels
    are not among them: NodeRestriction forbids a kubelet to set them, so the server sets
    them itself (`k8py.server.daemon`), as k3s does."""
    labels = {"kubernetes.io/arch": machine_arch, "kubernetes.io/os": "linux",
              "kubernetes.io/hostname": name, "beta.kubernetes.io/arch": machine_arch,
              "beta.kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "k8py"}
    labels.update(dict(extra))
    return labels


class HostUsage:
    """One measurement of what the pressure conditions look at."""

    def __init__(self, memory_available: int, disk_total: int, disk_available: int,
                 pids_used: int, pid_max: int):
        self.memory_available = memory_available
        self.disk_total = disk_total
        self.disk_available = disk_available
        self.pids_used = pids_used
        self.pid_max = pid_max


def measure(data_dir: str) -> HostUsage:
    memory = parse_meminfo(read_file("/proc/meminfo"))
    try:
        fs = os.statvfs(data_dir)
        total, available = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
    except OSError:
        total = available = 0
    loadavg = read_file("/proc/loadavg").split()
    try:
        pids = int(loadavg[3].split("/")[1])
    except (IndexError, ValueError):
        pids = 0
    try:
        pid_max = int(read_file("/proc/sys/kernel/pid_max", "32768").strip())
    except ValueError:
        pid_max = 32768
    return HostUsage(memory.get("MemAvailable", memory.get("MemFree", 0)), total, available,
                     pids, pid_max)


def conditions(usage: HostUsage, runtime_problem: str | None) -> dict[str, tuple[str, str, str]]:
    """type -> (status, reason, message), as upstream's kubelet words them."""
    memory = usage.memory_available < MEMORY_EVICTION
    disk = usage.disk_total > 0 and usage.disk_available < usage.disk_total * NODEFS_EVICTION
    pids = usage.pid_max > 0 and usage.pid_max - usage.pids_used < usage.pid_max * PID_EVICTION
    result = {
        "MemoryPressure": ("True", "KubeletHasInsufficientMemory",
                           "kubelet has insufficient memory available") if memory else
        ("False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        "DiskPressure": ("True", "KubeletHasDiskPressure", "kubelet has disk pressure")
        if disk else ("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        "PIDPressure": ("True", "KubeletHasInsufficientPID",
                        "kubelet has insufficient PID available") if pids else
        ("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    }
    if runtime_problem:
        result["Ready"] = ("False", "KubeletNotReady", runtime_problem)
    else:
        result["Ready"] = ("True", "KubeletReady", "kubelet is posting ready status")
    return result


def merge_conditions(old: list[dict[str, Any]], new: dict[str, tuple[str, str, str]],
                     now: str) -> list[dict[str, Any]]:
    """New condition entries; lastTransitionTime kept while the status stays the same."""
    previous = {c.get("type"): c for c in old or ()}
    merged = []
    for kind in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready"):
        status, reason, message = new[kind]
        before = previous.get(kind)
        transition = before.get("lastTransitionTime") if before and \
            before.get("status") == status else now
        merged.append({"type": kind, "status": status, "reason": reason, "message": message,
                       "lastHeartbeatTime": now, "lastTransitionTime": transition or now})
    return merged


def runtime_problem(status: Any, network_configured: bool) -> str | None:
    """Why the runtime is not ready (from a CRI StatusResponse), None when it is."""
    if status is None:
        return "container runtime is down"
    problems = []
    for condition in status.status.conditions:
        if condition.type == "NetworkReady" and not network_configured:
            continue
        if not condition.status:
            problems.append(f"{condition.type}=false reason:{condition.reason} "
                            f"message:{condition.message}")
    if not network_configured:
        problems.append("container runtime network not ready: NetworkReady=false "
                        "reason:NetworkPluginNotReady message:no pod CIDR assigned yet")
    return "; ".join(problems) or None


class NodeStatusReporter:
    def __init__(self, client: Client, cri, *, name: str, node_ip: str, data_dir: str,
                 kubelet_port: int, labels: dict[str, str],
                 network_configured: Callable[[], bool] = lambda: True,
                 heartbeat: float = 10.0, status_interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.cri = cri
        self.name = name
        self.node_ip = node_ip
        self.data_dir = data_dir
        self.kubelet_port = kubelet_port
        self.labels = labels
        self.network_configured = network_configured
        self.heartbeat = heartbeat
        self.status_interval = status_interval
        self.clock = clock
        self.node: dict[str, Any] | None = None
        self.registered = asyncio.Event()
        self.changed = asyncio.Event()  # set to report at once (a pod CIDR arrived, ...)
        self._last_report = -1e9
        self._last_conditions: dict[str, tuple[str, str, str]] | None = None
        self._runtime_version = "containerd://unknown"

    # --- the status document ----------------------------------------------------------------

    async def _status(self) -> tuple[dict[str, Any], dict[str, tuple[str, str, str]]]:
        try:
            version = await self.cri.version()
            self._runtime_version = f"{version.runtime_name}://{version.runtime_version}"
            runtime_status = await self.cri.status()
        except Exception as exc:  # the runtime is down: report it, do not fail
            log.debug("runtime status: %s", exc)
            runtime_status = None
        usage = await asyncio.to_thread(measure, self.data_dir)
        memory = parse_meminfo(read_file("/proc/meminfo")).get("MemTotal", 0)
        cpus = os.cpu_count() or 1
        now_conditions = conditions(usage, runtime_problem(runtime_status,
                                                           self.network_configured()))
        status = {
            "capacity": capacity(cpus, memory, usage.disk_total),
            "allocatable": allocatable(cpus, memory, usage.disk_total),
            "addresses": [{"type": "InternalIP", "address": self.node_ip},
                          {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {
                "architecture": arch(), "operatingSystem": "linux",
                "kernelVersion": platform.release(),
                "osImage": os_image(read_file("/etc/os-release")),
                "containerRuntimeVersion": self._runtime_version,
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                "machineID": read_file("/etc/machine-id").strip(),
                "systemUUID": read_file("/sys/class/dmi/id/product_uuid").strip(),
                "bootID": read_file("/proc/sys/kernel/random/boot_id").strip(),
            },
            "images": await self._images(),
        }
        return status, now_conditions

    async def _images(self) -> list[dict[str, Any]]:
        try:
            images = await self.cri.list_images()
        except Exception:
            return []
        listed = [{"names": list(image.repo_digests) + list(image.repo_tags),
                   "sizeBytes": image.size} for image in images
                  if image.repo_tags or image.repo_digests]
        listed.sort(key=lambda i: -i["sizeBytes"])
        return listed[:50]

    # --- registration -----------------------------------------------------------------------

    async def register(self) -> dict[str, Any]:
        status, now_conditions = await self._status()
        status["conditions"] = merge_conditions([], now_conditions, timestamps.now())
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": dict(self.labels),
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {}, "status": status}
        try:
            node = await self.client.create(NODES, body)
            log.info("registered node %s", self.name)
        except errors.AlreadyExists:
            node = await self.client.patch(NODES, self.name,
                                           {"metadata": {"labels": self.labels}})
            log.info("node %s exists: taking it over", self.name)
        node = await self.client.patch(NODES, self.name, {"status": status},
                                       subresource="status")
        self.node = node
        self._last_conditions = now_conditions
        self._last_report = self.clock()
        self.registered.set()
        return node

    async def report(self, force: bool = False) -> None:
        status, now_conditions = await self._status()
        due = self.clock() - self._last_report >= self.status_interval
        if not (force or due or now_conditions != self._last_conditions):
            return
        node = await self.client.get(NODES, self.name)
        status["conditions"] = merge_conditions(
            (node.get("status") or {}).get("conditions") or [], now_conditions,
            timestamps.now())
        self.node = await self.client.patch(NODES, self.name, {"status": status},
                                            subresource="status")
        if now_conditions != self._last_conditions:
            log.info("node %s: Ready=%s %s", self.name, now_conditions["Ready"][0],
                     now_conditions["Ready"][2])
        self._last_conditions = now_conditions
        self._last_report = self.clock()

    async def refresh(self) -> dict[str, Any]:
        self.node = await self.client.get(NODES, self.name)
        return self.node

    async def renew_lease(self) -> None:
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": timestamps.micro_now()}
        try:
            lease = await self.client.get(LEASES, self.name, "kube-node-lease")
        except errors.NotFound:
            node = self.node or await self.refresh()
            await self.client.create(LEASES, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": self.name,
                                                  "uid": node["metadata"]["uid"]}]},
                "spec": spec})
            return
        await self.client.update(LEASES, {**lease, "spec": {**lease["spec"], **spec}})

    async def run(self) -> None:
        delay = 1.0
        while not self.registered.is_set():
            try:
                await self.register()
            except errors.StatusError as exc:
                log.warning("registering node %s: %s; retrying in %.0f s", self.name,
                            exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        while True:
            try:
                await self.renew_lease()
                force = self.changed.is_set()
                self.changed.clear()
                await self.report(force)
            except errors.StatusError as exc:
                log.warning("node %s heartbeat: %s", self.name, exc.message)
            try:
                async with asyncio.timeout(self.heartbeat):
                    await self.changed.wait()
            except asyncio.TimeoutError:
                pass
