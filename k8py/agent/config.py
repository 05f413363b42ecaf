"""`AgentConfig`: everything a node's agent needs to know, from flags or from the server.

A plain frozen dataclass, so the embedded agent (built by `k8py server`) and a standalone
agent hand the same thing to `k8py.agent.daemon.run`; both build it with `agent_config`. Paths under the data dir follow the
layout in docs/architecture.md: `<data-dir>/agent/...`.
"""

from __future__ import annotations

import dataclasses
import os
import socket


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    data_dir: str = "/var/lib/k8py"
    node_name: str = ""  # "" = the hostname, lower-cased
    node_ip: str = ""  # "" = detected (the address of the default route's interface)
    cluster_dns: str = "10.43.0.10"
    cluster_domain: str = "cluster.local"
    kubelet_port: int = 10250
    container_runtime_endpoint: str | None = None  # None: start our own containerd
    node_labels: tuple[tuple[str, str], ...] = ()
    is_server: bool = False  # adds the control-plane role label
    tls_cert: str = ""  # kubelet serving certificate
    tls_key: str = ""
    client_ca: str = ""  # CA of clients the kubelet server accepts (the cluster CA)
    cluster_cidr: str = "10.42.0.0/16"  # pods' network: what the proxy does not masquerade
    service_proxy: bool = True  # keep the Service rules in nftables (`k8py.net.proxy`)
    network_policy: bool = True  # enforce NetworkPolicies in nftables (`k8py.net.policy`)
    flannel_backend: str = "vxlan"  # pods across nodes: vxlan, host-gw or none
    flannel_iface: str | None = None  # the uplink (default: the node address's interface)
    resolv_conf: str = "/etc/resolv.conf"  # the host's resolvers: pods' Default, DNS upstream
    cluster_dns_server: bool = True  # answer cluster DNS on this node (`k8py.net.dns`)
    ingress: bool = True  # the built-in ingress controller (`k8py.net.ingress`)
    ingress_http_port: int = 80
    ingress_https_port: int = 443
    # CrashLoopBackOff: the first restart is immediate, then base doubling up to max
    # (upstream's 10 s and 300 s); reset after `backoff_reset` seconds of running.
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0
    image_pull_timeout: float = 120.0
    # how often the kubelet server looks for a renewed certificate or CA bundle on disk
    certificate_check_interval: float = 5.0

    @property
    def agent_dir(self) -> str:
        return os.path.join(self.data_dir, "agent")

    @property
    def pods_dir(self) -> str:
        return os.path.join(self.agent_dir, "pods")

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.agent_dir, "logs")

    @property
    def images_dir(self) -> str:
        return os.path.join(self.agent_dir, "images")

    @property
    def cni_conf_dir(self) -> str:
        return os.path.join(self.agent_dir, "etc", "cni", "net.d")

    @property
    def containerd_dir(self) -> str:
        return os.path.join(self.agent_dir, "containerd")

    @property
    def tls_dir(self) -> str:
        return os.path.join(self.agent_dir, "tls")

    def resolved_node_name(self) -> str:
        return (self.node_name or socket.gethostname()).lower()

    def resolved_node_ip(self) -> str:
        return self.node_ip or detect_node_ip()


def agent_config(*, data_dir: str, node_name: str = "", node_ip: str = "",
                 cluster_dns: str = "10.43.0.10", cluster_domain: str = "cluster.local",
                 container_runtime_endpoint: str | None = None,
                 node_labels: tuple[str, ...] = (), kubelet_port: int = 10250,
                 is_server: bool = False, tls_cert: str = "", tls_key: str = "",
                 client_ca: str = "", cluster_cidr: str = "10.42.0.0/16",
                 service_proxy: bool = True, network_policy: bool = True,
                 cluster_dns_server: bool = True, flannel_backend: str = "vxlan",
                 flannel_iface: str | None = None,
                 resolv_conf: str = "/etc/resolv.conf", ingress: bool = True,
                 ingress_http_port: int = 80, ingress_https_port: int = 443) -> AgentConfig:
    """The one place an agent's configuration is assembled, from what `k8py agent`'s flags
    or `k8py server`'s (for its embedded agent) say: the node name (the hostname, lower
    case, when none is given), the node address (detected when none is given) and the
    `KEY=VALUE` node labels resolved."""
    return AgentConfig(
        data_dir=data_dir, node_name=(node_name or socket.gethostname()).lower(),
        node_ip=node_ip or detect_node_ip(), cluster_dns=cluster_dns,
        cluster_domain=cluster_domain, kubelet_port=kubelet_port,
        container_runtime_endpoint=container_runtime_endpoint,
        node_labels=tuple(tuple(item.split("=", 1)) for item in node_labels),
        is_server=is_server, tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca,
        cluster_cidr=cluster_cidr, service_proxy=service_proxy, network_policy=network_policy,
        cluster_dns_server=cluster_dns_server, flannel_backend=flannel_backend, flannel_iface=flannel_iface,
        resolv_conf=resolv_conf or "/etc/resolv.conf", ingress=ingress,
        ingress_http_port=ingress_http_port, ingress_https_port=ingress_https_port)


def detect_node_ip() -> str:
    """The source address of the default route (no packet is sent), else the first
    non-loopback IPv4 address of the hostname, else 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
            if address and not address.startswith("127."):
                return address
        except OSError:
            pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            address = info[4][0]
            if not address.startswith("127."):
                return address
    except OSError:
        pass
    return "127.0.0.1"
