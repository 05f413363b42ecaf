"""k8py: a lightweight Kubernetes distribution in one Python asyncio program.

One executable runs as a server (API server, store, scheduler, controllers) or as an agent
(kubelet, service proxy, DNS). See docs/architecture.md for the map.
"""

__version__ = "0.1.0"

# The Kubernetes API version k8py speaks; reported by `/version` with `+k8py` build metadata.
KUBERNETES_VERSION = "v1.32.0"
