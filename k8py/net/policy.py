"""The NetworkPolicy enforcer: every agent keeps table `ip k8py-policy` in step with the
cluster's NetworkPolicies, Pods and Namespaces, for the pods of its own node
(kube-router's network policy controller in k3s; off with `--disable-network-policy`).

Three informers (NetworkPolicies, every Pod of the cluster — peers live on other nodes —
and Namespaces) feed a `tablekeeper.TableKeeper`: on any change `policyrules.build` (pure)
computes the table and what changed goes to the kernel as one transaction, mostly set
elements (a pod that starts or stops adds or removes its address). The pod cache keeps only
what policies read of a pod (`slim_pod`), so every agent holding every pod costs little.

Like the Service proxy's, the table stays when the agent stops (pods keep their isolation
while it restarts); `policyrules.removal` takes it away.
"""

from __future__ import annotations

import asyncio
from typing import Any

from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.informer import Informer
from k8py.net import nftscript, policyrules
from k8py.net.nft import Nft
from k8py.net.proxy import enable_kernel_settings
from k8py.net.tablekeeper import TableKeeper

NETWORK_POLICIES = builtin("networking.k8s.io/v1", "networkpolicies")
PODS = builtin("v1", "pods")
NAMESPACES = builtin("v1", "namespaces")


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod as the policy rules read it: labels, node, address, phase, named ports."""
    metadata, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    return {
        "metadata": {key: metadata[key] for key in ("namespace", "name", "labels",
                                                    "resourceVersion", "uid")
                     if key in metadata},
        "spec": {"nodeName": spec.get("nodeName"), "hostNetwork": spec.get("hostNetwork"),
                 "containers": [{"ports": [p for p in c.get("ports") or () if p.get("name")]}
                                for c in spec.get("containers") or ()
                                if any(p.get("name") for p in c.get("ports") or ())]},
        "status": {key: status[key] for key in ("phase", "podIP", "podIPs") if key in status},
    }


def _without_version(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return {**obj, "metadata": metadata}


class PolicyEnforcer(TableKeeper):
    what = "network policy rules"

    def __init__(self, client: Client, node: str, nft: Nft | None = None):
        self.policies = Informer(client, NETWORK_POLICIES)
        self.pods = Informer(client, PODS, transform=slim_pod)
        self.namespaces = Informer(client, NAMESPACES)
        super().__init__((self.policies, self.pods, self.namespaces), False, nft)
        self.node = node

    def matters(self, old: dict, new: dict) -> bool:
        """A pod's status is written often; the table changes only when what `slim_pod`
        keeps of it does (not its resourceVersion alone)."""
        return _without_version(old) != _without_version(new)

    def build(self) -> nftscript.Table:
        return policyrules.build(self.policies.list(), self.pods.list(),
                                 self.namespaces.list(), self.node)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        enable_kernel_settings()  # bridged pod-to-pod traffic through the forward hook
        await super().run(ready)
