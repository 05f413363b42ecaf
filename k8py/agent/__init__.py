"""The node agent. Built so far: simulated nodes (`simulated`), for tests, demos and
benchmarks. The real kubelet (CRI, containerd, pod workers) is not built yet."""
