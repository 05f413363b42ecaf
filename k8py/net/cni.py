"""The node's CNI network configuration: a pure function of the podCIDR, and its writer.

containerd's CRI plugin reads the first conflist in its `conf_dir` and runs the plugins itself
on RunPodSandbox / StopPodSandbox; the agent's only part is writing this file before the first
sandbox. The network (`k8py`) is what k3s's flannel-less setups use:

- `bridge` on `cni0`, which is each pod's default gateway (`isGateway`) and lets a pod reach
  itself through a Service (`hairpinMode`); it does not masquerade (its `ipMasq` would hide
  pods from pods on other nodes): traffic leaving the cluster CIDR is masqueraded by the
  proxy's nftables table (`servicerules`);
- `host-local` IPAM over the node's `spec.podCIDR` (one range per CIDR for dual stack), with a
  default route per family; its allocation state lives in `ipam_data_dir` (the agent passes
  `<data-dir>/agent/cni/networks`) so a data dir carries its own leases;
- `portmap` for hostPort (`capabilities.portMappings`: containerd passes the sandbox's port
  mappings as runtime config).

The Debian plugins (1.1.1) speak CNI 0.1.0 to 1.0.0; containerd 1.6's libcni too: we write
1.0.0. `loopback` is implicit (containerd brings `lo` up in every sandbox).

The writer replaces the file atomically (temp file + rename, mode 0644) and only when the
content changed, so containerd's config watcher does not reload needlessly.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

NETWORK_NAME = "k8py"
CNI_VERSION = "1.0.0"
CONFLIST_NAME = "10-k8py.conflist"


def cni_config(pod_cidr: str | Sequence[str], *, bridge: str = "cni0", mtu: int | None = None,
               ipam_data_dir: str | None = None) -> dict[str, Any]:
    """The conflist for a node whose podCIDR(s) are `pod_cidr`."""
    cidrs = [pod_cidr] if isinstance(pod_cidr, str) else list(pod_cidr)
    if not cidrs:
        raise ValueError("a pod CIDR is required")
    networks = [ipaddress.ip_network(cidr, strict=True) for cidr in cidrs]
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": str(net)}] for net in networks],
        "routes": [{"dst": "0.0.0.0/0" if net.version == 4 else "::/0"} for net in networks],
    }
    if ipam_data_dir:
        ipam["dataDir"] = ipam_data_dir
    bridge_conf: dict[str, Any] = {
        "type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
        "hairpinMode": True, "ipam": ipam,
    }
    if mtu:
        bridge_conf["mtu"] = mtu
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            bridge_conf,
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
        ],
    }


def write_cni_config(conf_dir: str, pod_cidr: str | Sequence[str], *, bridge: str = "cni0",
                     mtu: int | None = None, ipam_data_dir: str | None = None) -> bool:
    """Write `<conf_dir>/10-k8py.conflist` if its content differs; True if it was written.
    Blocking (small file I/O): call it from a thread in the event loop."""
    content = json.dumps(cni_config(pod_cidr, bridge=bridge, mtu=mtu,
                                    ipam_data_dir=ipam_data_dir), indent=2) + "\n"
    path = os.path.join(conf_dir, CONFLIST_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == content:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(conf_dir, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=conf_dir, prefix=".k8py-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return True
