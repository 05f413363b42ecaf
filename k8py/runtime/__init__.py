"""The container runtime side of a node: the CRI v1 client over grpclib (`cri`; messages and
stubs generated from `cri.proto`, our subset of runtime.v1), and images without a registry."""
