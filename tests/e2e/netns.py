"""Network namespaces for the e2e tests that run containerd, pods or a whole node.

The rules every such test keeps:

- Everything that uses the network runs inside a namespace the test created
  (`k8py-e2e-<random>`): containerd and its stream server on 127.0.0.1, the server with its
  embedded agent, kubectl, the Python client, the pods' bridge `cni0` and all pod traffic. The
  host's network is never touched.
- A namespace is entered for the network only: `entered` moves the test's own thread in with
  setns(CLONE_NEWNET) (processes and threads started from it follow), and `nsenter` prefixes a
  child's command line with `nsenter --net=`. Never `ip netns exec`: it also unshares the mount
  namespace and remounts /sys, which hides the cgroup mounts runc needs.
- Everything a test starts is cleaned up: the test stops its own processes first, then
  `kill_leftovers` SIGKILLs whatever still holds the data dir (containerd-shims, containerd)
  and unmounts what is left under it, and only then is the namespace deleted.

Entering is `tools.netns.inside`, which the benchmarks use too (they do not import tests).
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator

from k8py import hostcleanup
from tools.netns import inside


def new_name() -> str:
    return f"k8py-e2e-{uuid.uuid4().hex[:8]}"


def nsenter(name: str) -> list[str]:
    """The command prefix that runs a child in namespace `name` (network only)."""
    return ["nsenter", f"--net=/run/netns/{name}"]


@contextlib.contextmanager
def created(name: str | None = None) -> Iterator[str]:
    """Create a namespace (a fresh name unless given) with `lo` up; delete it after."""
    name = name or new_name()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run([*nsenter(name), "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@contextlib.contextmanager
def entered(name: str | None = None) -> Iterator[str]:
    """`created`, with this thread moved into the namespace; back out before it is deleted."""
    with created(name) as name, inside(name):
        yield name


def add_node_address(name: str, ip: str, prefix: int = 24) -> None:
    """The node's own address in namespace `name`: on `node0`, one end of a veth pair
    (`node0`/`node1`, both up), so the kubelet has an InternalIP that is not loopback."""
    for command in (["ip", "link", "add", "node0", "type", "veth", "peer", "name", "node1"],
                    ["ip", "addr", "add", f"{ip}/{prefix}", "dev", "node0"],
                    ["ip", "link", "set", "node0", "up"],
                    ["ip", "link", "set", "node1", "up"]):
        subprocess.run([*nsenter(name), *command], check=True)


def kill_leftovers(data_dir: str) -> None:
    """SIGKILL every process whose command line names the data dir (containerd-shims, whose
    `-address` is the socket under it; containerd itself), then unmount what is left under it
    (rootfs overlays, sandbox shm), deepest first: a failed test must not leave them behind.
    The same clean-up as `k8py lab down`, so the same code."""
    hostcleanup.kill_runtime(data_dir)
    hostcleanup.unmount_under(data_dir)
