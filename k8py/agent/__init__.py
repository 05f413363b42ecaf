"""The node agent: kubelet, node registration and lease, pod workers. Not built yet."""
