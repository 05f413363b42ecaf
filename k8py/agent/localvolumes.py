"""Persistent volumes on this node's disk: where a pod's claim lives, and the removal of
released local-path volumes.

`claim_source(client, namespace, claim)` is what the kubelet mounts for a
`persistentVolumeClaim` volume: the claim must be Bound (else upstream's `PVC is not bound`,
and the kubelet retries), its PersistentVolume (which the Node authorizer lets a node read
once a pod of the node uses the claim) must be a `hostPath` or `local` volume. A volume
provisioned by `rancher.io/local-path` has its directory made here, mode 0777 whatever the
umask (what k3s's helper pod does with `mkdir -m 0777`), when first mounted.

`LocalVolumeReclaimer` is the node's half of the `Delete` reclaim policy for local-path
volumes (the server never touches a node's disk): it watches PersistentVolumes, and for each
one provisioned by `rancher.io/local-path` whose node affinity names this node and that the
PV controller marked Released under `Delete`, it removes the directory, then deletes the
PersistentVolume (with a uid precondition). Only a `pvc-*` directory of the node's storage
directory is removed, or (the server's storage directory, when this node's data directory
differs) exactly `.../storage/pvc-<claim uid>_<namespace>_<name>` of the PV's own claim, so a
hand-written PV cannot make the node delete something else. A failure is
logged and retried on the next change or resync.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.informer import Informer

log = logging.getLogger(__name__)

CLAIMS = builtin("v1", "persistentvolumeclaims")
VOLUMES = builtin("v1", "persistentvolumes")
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
LOCAL_PATH = "rancher.io/local-path"
HOSTNAME = "kubernetes.io/hostname"
RESYNC = 60.0


class ClaimNotReady(Exception):
    """The claim cannot be mounted yet (upstream's message)."""


def _local_path(volume: dict[str, Any]) -> bool:
    return (volume["metadata"].get("annotations") or {}).get(PROVISIONED_BY) == LOCAL_PATH


async def claim_source(client: Client, namespace: str, name: str) -> tuple[str, str]:
    """The host path of a bound claim's volume and its hostPath type ("" for `local`)."""
    prefix = f"error processing PVC {namespace}/{name}"
    try:
        claim = await client.get(CLAIMS, name, namespace)
    except errors.StatusError as exc:
        raise ClaimNotReady(f"{prefix}: failed to fetch PVC from API server: "
                            f"{exc.message}") from None
    volume_name = (claim.get("spec") or {}).get("volumeName")
    if (claim.get("status") or {}).get("phase") != "Bound" or not volume_name:
        raise ClaimNotReady(f"{prefix}: PVC is not bound")
    try:
        volume = await client.get(VOLUMES, volume_name)
    except errors.StatusError as exc:
        raise ClaimNotReady(f"{prefix}: failed to fetch PV {volume_name} from API server: "
                            f"{exc.message}") from None
    spec = volume.get("spec") or {}
    if spec.get("hostPath"):
        path, kind = spec["hostPath"]["path"], spec["hostPath"].get("type") or ""
    elif spec.get("local"):
        path, kind = spec["local"]["path"], ""
    else:
        raise ClaimNotReady(f"{prefix}: volume {volume_name} is neither hostPath nor local, "
                            "the kinds k8py mounts")
    if _local_path(volume):
        await asyncio.to_thread(_make_shared_dir, path)
    return path, kind


def _make_shared_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)


def on_node(volume: dict[str, Any], node_name: str, hostname: str) -> bool:
    """Whether a local-path volume's node affinity names this node (as the provisioner
    writes it: one term, `kubernetes.io/hostname In [<node>]`)."""
    required = ((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}
    for term in required.get("nodeSelectorTerms") or ():
        for expression in term.get("matchExpressions") or ():
            if expression.get("key") == HOSTNAME and expression.get("operator") == "In" and \
                    (hostname in (expression.get("values") or ()) or
                     node_name in (expression.get("values") or ())):
                return True
    return False


class LocalVolumeReclaimer:
    def __init__(self, client: Client, node_name: str, storage_dir: str,
                 hostname: str | None = None):
        self.client = client
        self.node_name = node_name
        self.hostname = hostname or node_name
        self.storage_dir = os.path.realpath(storage_dir)
        self.volumes = Informer(client, VOLUMES)
        self._wake = asyncio.Event()
        self.volumes.add_handlers(lambda v: self._wake.set(),
                                  lambda old, new: self._wake.set(), None)

    def _due(self, volume: dict[str, Any]) -> bool:
        return _local_path(volume) and \
            (volume.get("status") or {}).get("phase") == "Released" and \
            (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete" and \
            not volume["metadata"].get("deletionTimestamp") and \
            on_node(volume, self.node_name, self.hostname)

    def _inside(self, path: str, volume: dict[str, Any]) -> bool:
        real = os.path.realpath(path)
        if os.path.dirname(real) == self.storage_dir:
            return os.path.basename(real).startswith("pvc-")
        # the server's storage directory, when this node's data directory is another: only
        # the exact directory the provisioner names for this volume's claim
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        expected = f"{volume['metadata']['name']}_{ref.get('namespace')}_{ref.get('name')}"
        return volume["metadata"]["name"] == f"pvc-{ref.get('uid')}" and \
            os.path.basename(real) == expected and \
            os.path.basename(os.path.dirname(real)) == "storage"

    async def reclaim(self, volume: dict[str, Any]) -> None:
        name = volume["metadata"]["name"]
        path = ((volume.get("spec") or {}).get("hostPath") or {}).get("path") or \
            ((volume.get("spec") or {}).get("local") or {}).get("path") or ""
        if not self._inside(path, volume):
            log.warning("local-path volume %s: %r is not under %s; not removed", name, path,
                        self.storage_dir)
            return
        await asyncio.to_thread(shutil.rmtree, path, ignore_errors=True)
        try:
            await self.client.delete(VOLUMES, name,
                                     preconditions={"uid": volume["metadata"]["uid"]})
        except (errors.NotFound, errors.Conflict):
            pass
        log.info("local-path volume %s removed (%s)", name, path)

    async def run(self) -> None:
        watching = asyncio.create_task(self.volumes.run())
        try:
            while True:
                try:
                    async with asyncio.timeout(RESYNC):
                        await self._wake.wait()
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
                for volume in self.volumes.list():
                    if self._due(volume):
                        try:
                            await self.reclaim(volume)
                        except errors.StatusError as exc:
                            log.warning("local-path volume %s: %s",
                                        volume["metadata"]["name"], exc.message)
                if watching.done():
                    watching.result()
                    raise RuntimeError("the PersistentVolume watch ended")
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
