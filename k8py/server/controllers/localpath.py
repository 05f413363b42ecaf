"""The local-path provisioner: k3s's `rancher.io/local-path` (local-path-provisioner) built in,
for the `local-path` StorageClass the server installs (`STORAGE_CLASS`: the default class,
`WaitForFirstConsumer`, `Delete`).

It takes the claims the PV controller handed to its provisioner (annotation
`volume.kubernetes.io/storage-provisioner: rancher.io/local-path`) once the scheduler has
chosen their pod's node (`volume.kubernetes.io/selected-node`), and creates the volume
`pvc-<claim uid>`: a `hostPath` (`DirectoryOrCreate`) at
`<storage dir>/pvc-<uid>_<namespace>_<name>` (k3s's layout; the storage dir is
`<data-dir>/storage`), required node affinity `kubernetes.io/hostname In [node]`, the claim's
size and access modes, the class's reclaim policy, and a `claimRef` naming the claim (so the
PV controller binds exactly this pair). Events on the claim as the external provisioner
writes them: `Provisioning`, then `ProvisioningSucceeded` (or `ProvisioningFailed`).

The server never touches the node's disk: the kubelet of that node creates the directory
(mode 0777, as k3s's helper pod does) when it mounts the volume, and removes it when the
volume is Released under `Delete` (`k8py.agent.localvolumes`). Every agent is assumed to use
the same data directory as the server (k3s's local-path config also holds one path for every
node).
"""

from __future__ import annotations

import os
from typing import Any

from k8py.api import errors
from k8py.client.informer import key_of
from k8py.server.controllers.base import Controller
from k8py.server.controllers.persistentvolume import (CLAIMS, CLASSES, LOCAL_PATH, NODES,
                                                      PROVISIONED_BY, SELECTED_NODE,
                                                      STORAGE_PROVISIONER, VOLUMES,
                                                      claim_class)

CLASS_NAME = "local-path"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
STORAGE_CLASS: dict[str, Any] = {
    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
    "metadata": {"name": CLASS_NAME, "annotations": {DEFAULT_CLASS: "true"}},
    "provisioner": LOCAL_PATH, "reclaimPolicy": "Delete",
    "volumeBindingMode": "WaitForFirstConsumer"}
HOSTNAME = "kubernetes.io/hostname"


def volume_path(storage_dir: str, claim: dict[str, Any]) -> str:
    metadata = claim["metadata"]
    return os.path.join(storage_dir,
                        f"pvc-{metadata['uid']}_{metadata['namespace']}_{metadata['name']}")


def volume_for(claim: dict[str, Any], storage_class: dict[str, Any], node: str,
               hostname: str, storage_dir: str) -> dict[str, Any]:
    """The PersistentVolume that serves `claim` on `node`."""
    metadata, spec = claim["metadata"], claim.get("spec") or {}
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "0")
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{metadata['uid']}",
                     "annotations": {PROVISIONED_BY: LOCAL_PATH,
                                     "local.path.provisioner/selected-node": node}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
            "storageClassName": storage_class["metadata"]["name"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": volume_path(storage_dir, claim), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME, "operator": "In", "values": [hostname]}]}]}},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                         "namespace": metadata["namespace"], "name": metadata["name"],
                         "uid": metadata["uid"],
                         "resourceVersion": metadata.get("resourceVersion")}}}


class LocalPathProvisioner(Controller):
    name = "local-path-provisioner"
    component = LOCAL_PATH
    service_account = "local-path-provisioner-service-account"
    workers = 1

    def setup(self) -> None:
        self.claims = self.informer(CLAIMS)
        self.classes = self.informer(CLASSES)
        self.volumes = self.informer(VOLUMES)
        self.nodes = self.informer(NODES)
        self.claims.add_handlers(self.enqueue_object, lambda old, new: self.enqueue_object(new),
                                 None)

    @property
    def storage_dir(self) -> str:
        return self.settings.storage_dir

    async def reconcile(self, key: str) -> float | None:
        claim = self.claims.get(key)
        if claim is None or claim["metadata"].get("deletionTimestamp") or \
                (claim.get("spec") or {}).get("volumeName"):
            return None
        annotations = claim["metadata"].get("annotations") or {}
        node = annotations.get(SELECTED_NODE)
        if annotations.get(STORAGE_PROVISIONER) != LOCAL_PATH or not node:
            return None
        storage_class = self.classes.get(claim_class(claim))
        if storage_class is None or storage_class.get("provisioner") != LOCAL_PATH:
            return None
        name = f"pvc-{claim['metadata']['uid']}"
        if self.volumes.get(name) is not None:
            return None
        node_object = self.nodes.get(node) or {}
        hostname = ((node_object.get("metadata") or {}).get("labels") or {}).get(HOSTNAME, node)
        namespaced = key_of(claim)
        await self.record(CLAIMS, claim, "Normal", "Provisioning",
                          f'External provisioner is provisioning volume for claim "{namespaced}"')
        try:
            await self.client.create(VOLUMES, volume_for(claim, storage_class, node, hostname,
                                                         self.storage_dir))
        except errors.AlreadyExists:
            return None
        except errors.StatusError as exc:
            await self.record(CLAIMS, claim, "Warning", "ProvisioningFailed",
                              f"failed to provision volume with StorageClass "
                              f'"{storage_class["metadata"]["name"]}": {exc.message}')
            raise
        await self.record(CLAIMS, claim, "Normal", "ProvisioningSucceeded",
                          f"Successfully provisioned volume {name}")
        return None
