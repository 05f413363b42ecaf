"""Simulated nodes (in the manner of kwok): N fake nodes that register, heartbeat and "run"
the pods bound to them, without containers. For tests, demos and benchmarks.

Each node is named `sim-<prefix>-<i>` and labelled `k8py.io/simulated=true` (plus the usual
`kubernetes.io/hostname`, `kubernetes.io/os`, `kubernetes.io/arch`), so nobody takes it for a
real one. Per node: a Lease in `kube-node-lease` renewed every `heartbeat` seconds, and the
Ready condition's heartbeat refreshed every `status_interval` seconds.

Pods: one informer over all pods; a pod bound to one of our nodes becomes Running and Ready
after `start_delay` seconds, with a pod IP from the node's `spec.podCIDR` (assigned by the
node IPAM controller; until there is one, from 10.244.<node>.0/24). A pod whose containers
would run to completion is simulated by the annotation `k8py.io/simulate-exit-code`: the pod
ends Succeeded (0) or Failed (other) after `k8py.io/simulate-run-seconds` (default 0.5).
A pod marked for deletion is removed (grace 0) at once: the simulated containers stop
immediately.

`stop_heartbeat(name)` silences a node, as if it had died: tests of the node lifecycle use it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Callable
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.informer import BY_NODE, Informer, key_of

log = logging.getLogger(__name__)

NODES = builtin("v1", "nodes")
PODS = builtin("v1", "pods")
LEASES = builtin("coordination.k8s.io/v1", "leases")
SIMULATED_LABEL = "k8py.io/simulated"
EXIT_CODE = "k8py.io/simulate-exit-code"
RUN_SECONDS = "k8py.io/simulate-run-seconds"


def node_ip(index: int) -> str:
    """The made-up InternalIP of simulated node `index` (10.250.0.1, 10.250.0.2, ...)."""
    return f"10.250.{index // 250}.{index % 250 + 1}"


def node_object(name: str, index: int, cpu: str, memory: str, pods: int) -> dict[str, Any]:
    now = timestamps.now()
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            SIMULATED_LABEL: "true", "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "type": "simulated"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": str(pods),
                         "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": str(pods),
                            "ephemeral-storage": "100Gi"},
            "conditions": [
                {"type": kind, "status": "False", "reason": reason,
                 "lastHeartbeatTime": now, "lastTransitionTime": now, "message": ""}
                for kind, reason in (("MemoryPressure", "KubeletHasSufficientMemory"),
                                     ("DiskPressure", "KubeletHasNoDiskPressure"),
                                     ("PIDPressure", "KubeletHasSufficientPID"))
            ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                  "message": "simulated kubelet is posting ready status",
                  "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": node_ip(index)},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                         "kubeletVersion": "v1.32.0+k8py", "kubeProxyVersion": "v1.32.0+k8py",
                         "containerRuntimeVersion": "simulated://1.0",
                         "kernelVersion": "simulated", "osImage": "k8py simulated node",
                         "machineID": "", "systemUUID": "", "bootID": ""},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        },
    }


class SimulatedNodes:
    def __init__(self, client: Client, count: int, *, prefix: str = "node",
                 cpu: str = "4", memory: str = "16Gi", pods: int = 110,
                 start_delay: float = 0.2, heartbeat: float = 10.0,
                 status_interval: float = 60.0,
                 client_for: Callable[[str], Client] | None = None):
        """`client_for(node)`: a client acting as that node (its own identity, so the
        Node authorizer and NodeRestriction apply to it as to a kubelet); without it, every
        node acts through `client`."""
        self.names = [f"sim-{prefix}-{i}" for i in range(count)]
        self._clients = {name: client_for(name) for name in self.names} if client_for else {}
        # reads (the pod informer) as the first node: a node may list every pod
        self.client = self._clients[self.names[0]] if self._clients else client
        self._index = {name: i for i, name in enumerate(self.names)}
        self.cpu, self.memory, self.max_pods = cpu, memory, pods
        self.start_delay = start_delay
        self.heartbeat = heartbeat
        self.status_interval = status_interval
        self.silenced: set[str] = set()
        self.pods = Informer(self.client, PODS)
        self.pods.add_index("node", BY_NODE)
        self._handled: dict[str, str] = {}  # pod key -> uid it was started for
        self._tasks: set[asyncio.Task] = set()
        self._ips: dict[str, set[str]] = {}  # node -> pod IPs in use
        self._cidrs: dict[str, ipaddress.IPv4Network] = {}

    def as_node(self, name: str) -> Client:
        return self._clients.get(name, self.client)

    def _as_pods_node(self, pod: dict[str, Any]) -> Client:
        return self.as_node((pod.get("spec") or {}).get("nodeName") or "")

    def stop_heartbeat(self, name: str) -> None:
        self.silenced.add(name)

    # --- nodes ------------------------------------------------------------------------------

    async def _register(self, name: str) -> None:
        body = node_object(name, self._index[name], self.cpu, self.memory, self.max_pods)
        try:
            node = await self.as_node(name).create(NODES, body)
        except errors.AlreadyExists:
            node = await self.as_node(name).get(NODES, name)
            await self.as_node(name).update_status(NODES, {**node, "status": body["status"]})
            node = await self.as_node(name).get(NODES, name)
        self._remember_cidr(node)

    def _remember_cidr(self, node: dict[str, Any]) -> None:
        cidr = (node.get("spec") or {}).get("podCIDR")
        if cidr:
            self._cidrs[node["metadata"]["name"]] = ipaddress.ip_network(cidr)

    async def _renew_lease(self, name: str) -> None:
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40,
                "renewTime": timestamps.micro_now()}
        try:
            lease = await self.as_node(name).get(LEASES, name, "kube-node-lease")
        except errors.NotFound:
            node = await self.as_node(name).get(NODES, name)
            self._remember_cidr(node)
            await self.as_node(name).create(LEASES, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": name,
                                                  "uid": node["metadata"]["uid"]}]},
                "spec": spec})
            return
        await self.as_node(name).update(LEASES, {**lease, "spec": {**lease["spec"], **spec}})

    async def _post_ready(self, name: str) -> None:
        node = await self.as_node(name).get(NODES, name)
        self._remember_cidr(node)
        now = timestamps.now()
        conditions = []
        for condition in (node.get("status") or {}).get("conditions") or []:
            condition = dict(condition, lastHeartbeatTime=now)
            if condition["type"] == "Ready" and condition.get("status") != "True":
                condition.update(status="True", reason="KubeletReady", lastTransitionTime=now,
                                 message="simulated kubelet is posting ready status")
            conditions.append(condition)
        await self.as_node(name).patch(NODES, name, {"status": {"conditions": conditions}},
                                patch_type="strategic", subresource="status")

    async def _node_loop(self, name: str) -> None:
        await asyncio.sleep(random.uniform(0, min(self.heartbeat, 1.0)))
        since_status = 0.0
        while True:
            if name not in self.silenced:
                try:
                    await self._renew_lease(name)
                    since_status += self.heartbeat
                    if since_status >= self.status_interval:
                        since_status = 0.0
                        await self._post_ready(name)
                    elif name not in self._cidrs:
                        self._remember_cidr(await self.as_node(name).get(NODES, name))
                except errors.StatusError as exc:
                    log.warning("simulated node %s: %s", name, exc.message)
            await asyncio.sleep(self.heartbeat)

    # --- pods -------------------------------------------------------------------------------

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node not in self._index or node in self.silenced:
            return
        key = key_of(pod)
        if pod["metadata"].get("deletionTimestamp"):
            self._spawn(self._finish_deletion(pod))
            return
        if self._handled.get(key) == pod["metadata"]["uid"]:
            return
        if (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed"):
            self._handled[key] = pod["metadata"]["uid"]
            return
        self._handled[key] = pod["metadata"]["uid"]
        self._spawn(self._start(pod))

    def _pod_deleted(self, pod: dict[str, Any]) -> None:
        key = key_of(pod)
        if self._handled.pop(key, None) is not None:
            ip = (pod.get("status") or {}).get("podIP")
            node = (pod.get("spec") or {}).get("nodeName")
            if ip and node in self._ips:
                self._ips[node].discard(ip)

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _allocate_ip(self, node: str) -> str:
        network = self._cidrs.get(node) or ipaddress.ip_network(
            f"10.244.{self._index[node] % 256}.0/24")
        used = self._ips.setdefault(node, set())
        for host in network.hosts():
            text = str(host)
            if host == network.network_address + 1 or text in used:
                continue  # .1 is the node's bridge on a real node
            used.add(text)
            return text
        raise RuntimeError(f"pod CIDR {network} of {node} is full")

    def _node_ip(self, node: str) -> str:
        return node_ip(self._index[node])

    async def _start(self, pod: dict[str, Any]) -> None:
        await asyncio.sleep(self.start_delay)
        metadata, spec = pod["metadata"], pod["spec"]
        node = spec["nodeName"]
        started = timestamps.now()
        ip = self._node_ip(node) if spec.get("hostNetwork") else self._allocate_ip(node)
        statuses = [{
            "name": c["name"], "image": c.get("image", ""), "imageID": "",
            "containerID": f"simulated://{metadata['uid'][:8]}-{c['name']}",
            "ready": True, "started": True, "restartCount": 0,
            "state": {"running": {"startedAt": started}}, "lastState": {},
        } for c in spec.get("containers") or []]
        conditions = [{"type": t, "status": "True", "lastProbeTime": None,
                       "lastTransitionTime": started}
                      for t in ("PodReadyToStartContainers", "Initialized", "Ready",
                                "ContainersReady", "PodScheduled")]
        status = {"phase": "Running", "conditions": conditions, "hostIP": self._node_ip(node),
                  "hostIPs": [{"ip": self._node_ip(node)}], "podIP": ip, "podIPs": [{"ip": ip}],
                  "startTime": started, "containerStatuses": statuses, "qosClass":
                  (pod.get("status") or {}).get("qosClass", "BestEffort")}
        if not await self._write_status(pod, status):
            return
        exit_code = (metadata.get("annotations") or {}).get(EXIT_CODE)
        if exit_code is None:
            return
        try:
            seconds = float(metadata["annotations"].get(RUN_SECONDS, "0.5"))
            code = int(exit_code)
        except ValueError:
            return
        await asyncio.sleep(seconds)
        finished = timestamps.now()
        reason = "Completed" if code == 0 else "Error"
        for item in statuses:
            item.update(ready=False, started=False, state={"terminated": {
                "exitCode": code, "reason": reason, "startedAt": started,
                "finishedAt": finished, "containerID": item["containerID"]}})
        for condition in conditions:
            if condition["type"] in ("Ready", "ContainersReady"):
                condition.update(status="False", reason="PodCompleted",
                                 lastTransitionTime=finished)
        status.update(phase="Succeeded" if code == 0 else "Failed", containerStatuses=statuses,
                      conditions=conditions)
        await self._write_status(pod, status)

    async def _write_status(self, pod: dict[str, Any], status: dict[str, Any]) -> bool:
        metadata = pod["metadata"]
        try:
            await self._as_pods_node(pod).patch(PODS, metadata["name"], {
                "metadata": {"uid": metadata["uid"]}, "status": status},
                metadata["namespace"], subresource="status")
            return True
        except errors.StatusError:
            return False  # deleted, or replaced by a pod of the same name (uid differs)

    async def _finish_deletion(self, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        try:
            await self._as_pods_node(pod).delete(PODS, metadata["name"], metadata["namespace"],
                                     grace_period=0,
                                     preconditions={"uid": metadata["uid"]})
        except (errors.NotFound, errors.Conflict):
            pass

    # --- running ----------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event | None = None) -> None:
        await asyncio.gather(*(self._register(name) for name in self.names))
        self.pods.add_handlers(self._pod_changed, lambda old, new: self._pod_changed(new),
                               self._pod_deleted)
        informer = asyncio.create_task(self.pods.run())
        loops = [asyncio.create_task(self._node_loop(name)) for name in self.names]
        try:
            await self.pods.synced.wait()
            if ready is not None:
                ready.set()
            await asyncio.gather(informer, *loops)
        finally:
            for task in [informer, *loops, *self._tasks]:
                task.cancel()
            await asyncio.gather(informer, *loops, *self._tasks, return_exceptions=True)
