"""Pod cgroups on the cgroupfs driver, and removing what containerd leaves behind.

Where pods live: the kubelet puts `linux.cgroup_parent = pod_cgroup_parent(uid)`, i.e.
`/k8py/pod<uid>`, in every sandbox config (and the same sandbox config goes with each
CreateContainer). With `SystemdCgroup = false` containerd's CRI joins that parent and the
container id, so runc creates `/sys/fs/cgroup/<controller>/k8py/pod<uid>/<container id>` in
every v1 hierarchy (and under `unified/` on hybrid hosts). runc removes the container's own
directory when the container is deleted, but nothing removes `k8py/pod<uid>`: the kubelet calls
`remove_pod_cgroups(uid)` once a pod's sandbox is removed, and on start
`pod_cgroup_uids()` lists the pods that have directories so stale ones can go too;
`pod_processes(uid)` reads what still runs in them (`k8py lab down` kills it).

Only empty cgroups can be removed (rmdir; a cgroup directory's files are the kernel's, they
need no unlinking). A directory still holding processes (EBUSY) is left alone and reported.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_PARENT = "k8py"
POD_PREFIX = "pod"


def pod_cgroup_parent(uid: str) -> str:
    """The sandbox's `linux.cgroup_parent` for a pod (cgroupfs form)."""
    return f"/{CGROUP_PARENT}/{POD_PREFIX}{uid}"


def hierarchies(cgroup_root: str = CGROUP_ROOT) -> list[str]:
    """Every mounted hierarchy's k8py directory that exists (v1 controllers and unified;
    on a pure v2 host the root itself)."""
    found = []
    candidates = [cgroup_root]
    try:
        candidates += [os.path.join(cgroup_root, name) for name in sorted(os.listdir(cgroup_root))]
    except OSError:
        return []
    for base in candidates:
        path = os.path.join(base, CGROUP_PARENT)
        if os.path.isdir(path):
            found.append(path)
    return found


def pod_cgroup_uids(cgroup_root: str = CGROUP_ROOT) -> set[str]:
    """The uids of pods that have a cgroup directory in any hierarchy."""
    uids = set()
    for parent in hierarchies(cgroup_root):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        uids.update(name[len(POD_PREFIX):] for name in names
                    if name.startswith(POD_PREFIX) and os.path.isdir(os.path.join(parent, name)))
    return uids


def pod_processes(uid: str, cgroup_root: str = CGROUP_ROOT) -> set[int]:
    """The pids in a pod's cgroups, in every hierarchy (its containers' processes)."""
    pids: set[int] = set()
    for parent in hierarchies(cgroup_root):
        for dirpath, _dirnames, files in os.walk(os.path.join(parent, POD_PREFIX + uid)):
            if "cgroup.procs" not in files:
                continue
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids.update(int(pid) for pid in f.read().split())
            except OSError:  # removed meanwhile
                pass
    return pids


def remove_pod_cgroups(uid: str, cgroup_root: str = CGROUP_ROOT) -> int:
    """Remove a pod's cgroup directories (deepest first) in every hierarchy; the number
    removed. Directories still in use are left and logged. Blocking, but quick (a few
    rmdir calls): fine from the event loop."""
    removed = 0
    for parent in hierarchies(cgroup_root):
        top = os.path.join(parent, POD_PREFIX + uid)
        if not os.path.isdir(top):
            continue
        for dirpath, _dirnames, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove cgroup %s: %s", dirpath, exc.strerror)
    return removed
