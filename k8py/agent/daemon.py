"""The node agent: everything a node runs, in one `async def run`.

`run(config, client)` is what `k8py server` embeds (with an in-process client) and what a
standalone agent will run (with an HTTPS client). In order, each part waiting for what it
needs (k3s's ready channels):

1. containerd (`containerd.run_containerd`): our own child with its own root and socket, or
   the runtime at `--container-runtime-endpoint`; it imports the pause image, then sets
   `runtime_ready` (cleared while a crashed containerd restarts);
2. airgap images (`airgap.run_airgap`): the archives in `<data-dir>/agent/images/`;
3. the Node (`kubelet.node.NodeStatusReporter`): registration, Lease every 10 s, status;
4. the pod network: once the node has a `spec.podCIDR` (the node IPAM controller assigns it),
   the CNI config is written (`k8py.net.cni`) and `network_ready` set; the node turns Ready;
5. the Service proxy (`k8py.net.proxy`: the cluster's Services as nftables rules), unless
   `--disable-kube-proxy`; NetworkPolicy (`k8py.net.policy`: this node's pods' policies as
   nftables rules), unless `--disable-network-policy`; cluster DNS (`k8py.net.dns`);
   the ingress controller on the node's ports 80/443 (`k8py.net.ingress`), unless
   `--disable-ingress`;
6. pod workers (`kubelet.podmanager.PodManager`), and the removal of released local-path
   volumes of this node (`localvolumes.LocalVolumeReclaimer`);
7. the kubelet HTTPS server (`kubelet.server.serve`) when a serving certificate is given;
   it authenticates and authorizes callers through the API server (`kubelet.auth`).

Any part failing ends `run` with its error (the supervisor then stops everything). Stopping
the agent leaves pods running: containerd's shims keep them, and a restarted agent adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from k8py.agent import airgap, containerd
from k8py.agent.config import AgentConfig
from k8py.agent.ingresstoken import IngressToken
from k8py.agent.kubelet import node as nodes
from k8py.agent.kubelet.podmanager import PodManager
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.informer import Informer
from k8py.runtime.cri import CriClient

log = logging.getLogger(__name__)

NODES = builtin("v1", "nodes")


async def keep_network(config: AgentConfig, client: Client,
                       reporter: nodes.NodeStatusReporter, network_ready: asyncio.Event,
                       node_list: Informer) -> None:
    """Once the node has a pod CIDR: the pod network across nodes (`k8py.net.overlay`: its
    annotations on the Node, routes to the other nodes' pods, from `node_list`, an informer
    on Nodes the caller runs), then the CNI config with the overlay's MTU (written again if
    the CIDR changes)."""
    from k8py.net import cni, overlay

    await reporter.registered.wait()
    written = None
    mtu = None  # the CNI default, without an overlay
    routes: asyncio.Task | None = None
    try:
        while True:
            try:
                node = await reporter.refresh()
            except Exception as exc:  # the API is briefly unreachable: try again
                log.debug("reading node %s: %s", reporter.name, exc)
                node = None
            spec = (node or {}).get("spec") or {}
            cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
            if cidrs and cidrs != written:
                if config.flannel_backend != "none" and routes is None:
                    links = overlay.Overlay(config.flannel_backend, reporter.node_ip,
                                            config.flannel_iface)
                    await asyncio.to_thread(links.prepare, cidrs[0])
                    await client.patch(NODES, reporter.name, {"metadata": {
                        "annotations": overlay.annotations(
                            config.flannel_backend, reporter.node_ip, links.vtep_mac)}})
                    mtu = links.pod_mtu
                    routes = asyncio.create_task(overlay.keep(links, node_list,
                                                              reporter.name))
                await asyncio.to_thread(cni.write_cni_config, config.cni_conf_dir, cidrs,
                                        mtu=mtu, ipam_data_dir=os.path.join(
                                            config.agent_dir, "cni", "networks"))
                log.info("pod network: CNI config for %s written", ", ".join(cidrs))
                written = cidrs
                network_ready.set()
                reporter.changed.set()
            await asyncio.sleep(1.0 if written is None else 30.0)
    finally:
        if routes is not None:
            routes.cancel()
            await asyncio.gather(routes, return_exceptions=True)


def _pods_view(manager: PodManager) -> list[dict[str, Any]]:
    """This node's pods with the status the kubelet last wrote (for the kubelet server)."""
    pods = []
    for pod in manager.pods.list():
        worker = manager.workers.get(pod["metadata"]["uid"])
        if worker is not None and worker.written is not None:
            pod = {**pod, "status": worker.written}
        pods.append(pod)
    return pods


async def run(config: AgentConfig, client: Client, ready: asyncio.Event | None = None,
              ingress_secrets: Client | None = None,
              ingress_token: IngressToken | None = None) -> None:
    """The agent; `ingress_secrets` is a client that may read TLS Secrets for the ingress
    controller (the embedded agent's, as `kube-system/k8py-ingress`), or `ingress_token`
    keeps one (a joined agent's, `k8py.agent.ingresstoken`); with neither, HTTPS Ingresses
    get the fallback certificate."""
    node_name = config.resolved_node_name()
    node_ip = config.resolved_node_ip()
    for path in (config.agent_dir, config.pods_dir, config.logs_dir, config.images_dir):
        os.makedirs(path, mode=0o755, exist_ok=True)
    socket = containerd.socket_path(config.data_dir, config.container_runtime_endpoint)
    runtime_ready = asyncio.Event()
    network_ready = asyncio.Event()
    tasks: list[asyncio.Task] = []
    cri = CriClient(socket)

    def start(name: str, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=f"agent-{name}")
        tasks.append(task)
        return task

    async def until(event: asyncio.Event) -> None:
        """Wait for event; a part that ends meanwhile ends the agent with its error."""
        waiter = asyncio.create_task(event.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            return
        waiter.cancel()
        for task in done:
            task.result()
            raise RuntimeError(f"{task.get_name()} ended")

    try:
        start("containerd", containerd.run_containerd(
            config.data_dir, runtime_ready,
            runtime_endpoint=config.container_runtime_endpoint))
        await until(runtime_ready)
        start("airgap", airgap.run_airgap(config.data_dir, socket, runtime_ready))
        labels = nodes.node_labels(node_name, nodes.arch(), config.is_server,
                                   config.node_labels)
        reporter = nodes.NodeStatusReporter(
            client, cri, name=node_name, node_ip=node_ip, data_dir=config.data_dir,
            kubelet_port=config.kubelet_port, labels=labels,
            network_configured=network_ready.is_set)
        start("node", reporter.run())
        # one cache each of Services, EndpointSlices and Nodes for the proxy, DNS and the
        # pod network, run while any of them needs it
        services = Informer(client, builtin("v1", "services"))
        slices = Informer(client, builtin("discovery.k8s.io/v1", "endpointslices"))
        node_list = Informer(client, NODES)
        needed = []
        if config.service_proxy or config.cluster_dns_server or config.ingress:
            needed += [services, slices]
        if config.cluster_dns_server or config.flannel_backend != "none":
            needed.append(node_list)
        for informer in needed:
            start(f"informer-{informer.resource.plural}", informer.run())
        start("network", keep_network(config, client, reporter, network_ready, node_list))
        if config.service_proxy:
            from k8py.net.proxy import ServiceProxy

            start("proxy", ServiceProxy(client, config.cluster_cidr, node_name,
                                        skip={config.cluster_dns},
                                        informers=(services, slices)).run())
        if config.network_policy:
            from k8py.net.policy import PolicyEnforcer

            start("network-policy", PolicyEnforcer(client, node_name).run())
        if config.cluster_dns_server:
            from k8py.net import dns as cluster_dns

            start("dns", cluster_dns.run(config.cluster_dns, config.cluster_domain,
                                         config.resolv_conf, (services, slices, node_list)))
        if config.ingress:
            from k8py.net.ingress import IngressController

            if ingress_secrets is None and ingress_token is not None:
                start("ingress-token", ingress_token.run())
                ingress_secrets = ingress_token.client
            start("ingress", IngressController(
                client, http_port=config.ingress_http_port,
                https_port=config.ingress_https_port, secrets_client=ingress_secrets,
                informers=(services, slices), node_name=node_name).run())
        await until(reporter.registered)
        if not config.ingress:  # a node that ran it before must not be listed any more
            from k8py.api import errors
            from k8py.net import ingress

            with contextlib.suppress(errors.StatusError):
                await ingress.announce(client, node_name, None)
        from k8py.agent.kubelet.volumes import VolumeManager

        volumes = VolumeManager(client, config.pods_dir, node_name,
                                cluster_domain=config.cluster_domain)
        manager = PodManager(client, cri, config, node_name=node_name, node_ip=node_ip,
                             node=lambda: reporter.node, volumes=volumes,
                             network_ready=network_ready)
        pods_ready = asyncio.Event()
        start("pods", manager.run(pods_ready))
        from k8py.agent.localvolumes import LocalVolumeReclaimer

        start("local-volumes", LocalVolumeReclaimer(
            client, node_name, os.path.join(config.data_dir, "storage"),
            hostname=labels.get("kubernetes.io/hostname")).run())
        if config.tls_cert and config.tls_key:
            from k8py.agent.kubelet import server
            from k8py.agent.kubelet.auth import KubeletAuth

            start("server", server.serve(config, cri, lambda: _pods_view(manager),
                                         auth=KubeletAuth(client, node_name)))
        else:
            log.warning("no kubelet serving certificate: logs, exec and port-forward are off")
        await until(pods_ready)
        log.info("agent ready: node %s (%s)", node_name, node_ip)
        if ready is not None:
            ready.set()
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
            raise RuntimeError(f"{task.get_name()} ended")
    finally:
        for task in reversed(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cri.close()
