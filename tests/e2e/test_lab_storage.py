"""Local persistent volumes on the shared `k8py lab`, with kubectl: a StatefulSet's claim
(default class local-path) keeps what its pod wrote across the pod's deletion, back on the same
node; deleting the claim once the set is scaled to 0 removes the volume's directory
(`<data-dir>/storage/pvc-<uid>_<ns>_<name>`) from that node's disk and the PersistentVolume;
a claim of a class that does not exist stays Pending with upstream's ProvisioningFailed Event.
The lab's node data directories are on this host (`/var/lib/k8py-lab/<name>/<node>`)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import wait_for
from tests.e2e.labcluster import IMAGE, LabCluster

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd")
                       or not os.path.exists("/usr/lib/cni/bridge"),
                       reason="needs root, containerd and the CNI plugins"),
]


def get(lab: LabCluster, *args: str) -> dict:
    return json.loads(lab.kubectl("get", *args, "-o", "json").stdout)


def running_pod(lab: LabCluster, name: str, not_uid: str = "") -> dict:
    def check():
        done = lab.kubectl("get", "pod", name, "-o", "json", check=False)
        if done.returncode != 0:
            return None
        pod = json.loads(done.stdout)
        return pod if pod["status"].get("phase") == "Running" and \
            pod["metadata"]["uid"] != not_uid else None
    return wait_for(check, timeout=120, interval=0.5, what=f"pod {name} running")


def test_statefulset_volume_survives_its_pod_and_goes_with_its_claim(lab):
    lab.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "keeper"},
        "spec": {"serviceName": "keeper", "replicas": 1,
                 "selector": {"matchLabels": {"app": "keeper"}},
                 "template": {"metadata": {"labels": {"app": "keeper"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": IMAGE,
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sh", "-c", "sleep 3600"],
                                     "volumeMounts": [{"name": "data",
                                                       "mountPath": "/data"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "64Mi"}}}}]}}))
    first = running_pod(lab, "keeper-0")
    node = first["spec"]["nodeName"]
    claim = get(lab, "pvc", "data-keeper-0")
    assert claim["spec"]["storageClassName"] == "local-path"
    assert claim["status"]["phase"] == "Bound"
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    uid = claim["metadata"]["uid"]
    volume = get(lab, "pv", claim["spec"]["volumeName"])
    assert volume["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    path = volume["spec"]["hostPath"]["path"]
    lab_dir = os.path.dirname(lab.kubeconfig)
    assert os.path.basename(path) == f"pvc-{uid}_default_data-keeper-0"
    assert os.path.dirname(os.path.dirname(path)).startswith(lab_dir)  # <node dir>/storage

    lab.kubectl("exec", "keeper-0", "--", "sh", "-c", "echo kept > /data/file")
    with open(os.path.join(path, "file")) as f:  # on the node's disk
        assert f.read() == "kept\n"

    lab.kubectl("delete", "pod", "keeper-0")
    second = running_pod(lab, "keeper-0", not_uid=first["metadata"]["uid"])
    assert second["spec"]["nodeName"] == node
    assert lab.kubectl("exec", "keeper-0", "--", "cat", "/data/file").stdout == "kept\n"

    # in use: a deleted claim waits (Terminating) for its pod
    lab.kubectl("scale", "statefulset", "keeper", "--replicas=0")
    wait_for(lambda: lab.kubectl("get", "pod", "keeper-0", check=False).returncode != 0,
             timeout=60, interval=0.5, what="keeper-0 gone")
    lab.kubectl("delete", "pvc", "data-keeper-0", "--timeout=60s")
    wait_for(lambda: not os.path.exists(path), timeout=60, interval=0.5,
             what="the volume's directory removed from the node")
    wait_for(lambda: lab.kubectl("get", "pv", volume["metadata"]["name"],
                                 check=False).returncode != 0,
             timeout=30, interval=0.5, what="the PersistentVolume deleted")
    lab.kubectl("delete", "statefulset", "keeper")


def test_claim_of_a_missing_class_stays_pending_with_an_event(lab):
    lab.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "classless"},
        "spec": {"storageClassName": "no-such-class", "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Mi"}}}}))

    def failed():
        events = get(lab, "events", "--field-selector",
                     "involvedObject.name=classless,reason=ProvisioningFailed")["items"]
        return events[0] if events else None
    event = wait_for(failed, timeout=30, interval=0.5, what="ProvisioningFailed event")
    assert event["type"] == "Warning"
    assert event["message"] == 'storageclass.storage.k8s.io "no-such-class" not found'
    assert event["source"]["component"] == "persistentvolume-controller"
    row = lab.kubectl("get", "pvc", "classless", "--no-headers").stdout.split()
    assert row[:2] == ["classless", "Pending"] and "no-such-class" in row
    lab.kubectl("delete", "pvc", "classless", "--timeout=30s")
