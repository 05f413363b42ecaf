"""The ServiceAccount admission plugin's details over a memory store: what it mounts where,
who wins on automount, which requests it leaves alone, mirror pods, mountable secrets."""

from __future__ import annotations

import pytest

from k8py.api import errors
from k8py.api.resources import Registry
from k8py.server.apiserver.admission import CREATE, UPDATE, Attributes
from k8py.server.apiserver.serviceaccount import (MOUNT_PATH, ServiceAccount, mount_token,
                                                  secret_names, should_automount,
                                                  token_volume)
from k8py.server.apiserver.storage import ObjectStore
from k8py.server.store import open_backend


@pytest.fixture
async def plugin():
    backend = open_backend("memory://", "")
    await backend.start()
    registry = Registry()
    objects = ObjectStore(backend)
    await objects.create(registry.get("", "v1", "namespaces"), {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    await objects.create(registry.get("", "v1", "namespaces"), {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "leaving", "deletionTimestamp": "2024-01-01T00:00:00Z"}})
    accounts = registry.get("", "v1", "serviceaccounts")
    for account in ({"metadata": {"name": "default", "namespace": "default"}},
                    {"metadata": {"name": "strict", "namespace": "default", "annotations": {
                        "kubernetes.io/enforce-mountable-secrets": "true"}},
                     "secrets": [{"name": "allowed"}], "imagePullSecrets": [{"name": "pull"}]}):
        await objects.create(accounts, {"apiVersion": "v1", "kind": "ServiceAccount",
                                        **account})
    try:
        yield ServiceAccount(registry, objects, retry_interval=(0, 0)), registry
    finally:
        await backend.close()


def attributes(registry, pod, operation=CREATE, subresource=None, namespace="default"):
    return Attributes(operation, registry.get("", "v1", "pods"), subresource, namespace,
                      (pod.get("metadata") or {}).get("name"), pod, None, None)


def pod(**spec):
    return {"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def test_mount_token_places():
    spec = mount_token({"initContainers": [{"name": "i"}], "containers": [
        {"name": "a", "volumeMounts": [{"name": "x", "mountPath": "/x"}]},
        {"name": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}],
        "ephemeralContainers": [{"name": "e"}], "volumes": [{"name": "x", "emptyDir": {}}]},
        "kube-api-access-abcde")
    mount = {"name": "kube-api-access-abcde", "readOnly": True, "mountPath": MOUNT_PATH}
    assert spec["initContainers"][0]["volumeMounts"] == [mount]
    assert spec["containers"][0]["volumeMounts"] == [{"name": "x", "mountPath": "/x"}, mount]
    assert spec["containers"][1]["volumeMounts"] == [{"name": "own", "mountPath": MOUNT_PATH}]
    assert "volumeMounts" not in spec["ephemeralContainers"][0]
    assert spec["volumes"] == [{"name": "x", "emptyDir": {}},
                               token_volume("kube-api-access-abcde")]
    # an existing kube-api-access volume is reused, not added again
    again = mount_token({"containers": [{"name": "c"}],
                         "volumes": [{"name": "kube-api-access-zzzzz", "emptyDir": {}}]},
                        "kube-api-access-abcde")
    assert again["containers"][0]["volumeMounts"][0]["name"] == "kube-api-access-zzzzz"
    assert len(again["volumes"]) == 1


def test_automount_preference():
    assert should_automount({}, {}) is True
    assert should_automount({"automountServiceAccountToken": False}, {}) is False
    assert should_automount({"automountServiceAccountToken": False},
                            {"automountServiceAccountToken": True}) is True
    assert should_automount({}, {"automountServiceAccountToken": False}) is False


def test_secret_names():
    assert sorted(secret_names({
        "imagePullSecrets": [{"name": "pull"}],
        "containers": [{"env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "env"}}}],
                        "envFrom": [{"secretRef": {"name": "from"}}]}],
        "volumes": [{"secret": {"secretName": "vol"}},
                    {"projected": {"sources": [{"secret": {"name": "proj"}}]}},
                    {"csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi"}}},
                    {"azureFile": {"secretName": "azure", "shareName": "s"}}]})) == [
        "azure", "csi", "env", "from", "proj", "pull", "vol"]


async def test_admit_defaults_the_account_and_mounts(plugin):
    admission, registry = plugin
    admitted = await admission.admit(attributes(registry, pod()))
    spec = admitted["spec"]
    assert spec["serviceAccountName"] == "default"
    assert spec["volumes"][0]["name"].startswith("kube-api-access-")
    assert "imagePullSecrets" not in spec
    # the deprecated field names the account too
    admitted = await admission.admit(attributes(registry, pod(serviceAccount="strict")))
    assert admitted["spec"]["serviceAccountName"] == "strict"
    assert admitted["spec"]["imagePullSecrets"] == [{"name": "pull"}]


async def test_requests_left_alone(plugin):
    admission, registry = plugin
    assert await admission.admit(attributes(registry, pod(), UPDATE)) is None
    assert await admission.admit(attributes(registry, pod(), subresource="status")) is None
    assert await admission.admit(attributes(registry, {"spec": "nonsense"})) is None
    configmaps = Attributes(CREATE, registry.get("", "v1", "configmaps"), None, "default",
                            "c", {"metadata": {"name": "c"}}, None, None)
    assert await admission.admit(configmaps) is None
    # no such namespace, or one being deleted: the write path answers for it
    assert await admission.admit(attributes(registry, pod(), namespace="nowhere")) is None
    assert await admission.admit(attributes(registry, pod(), namespace="leaving")) is None


async def test_missing_account(plugin):
    admission, registry = plugin
    with pytest.raises(errors.Forbidden) as refused:
        await admission.admit(attributes(registry, pod(serviceAccountName="ghost")))
    assert refused.value.message == ('pods "p" is forbidden: error looking up service '
                                     'account default/ghost: serviceaccount "ghost" not found')


async def test_mirror_pods(plugin):
    admission, registry = plugin
    mirror = pod(volumes=[{"name": "t", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}}]}}])
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "x"}
    assert await admission.admit(attributes(registry, mirror)) is None
    with pytest.raises(errors.Forbidden, match="a mirror pod may not use ServiceAccountToken "
                                               "volume projections"):
        await admission.validate(attributes(registry, mirror))
    mirror["spec"]["volumes"] = [{"name": "s", "secret": {"secretName": "x"}}]
    with pytest.raises(errors.Forbidden, match="a mirror pod may not reference secrets"):
        await admission.validate(attributes(registry, mirror))


async def test_enforced_mountable_secrets(plugin):
    admission, registry = plugin
    ok = pod(serviceAccountName="strict", volumes=[{"name": "s",
                                                    "secret": {"secretName": "allowed"}}])
    await admission.validate(attributes(registry, ok))
    bad = pod(serviceAccountName="strict", volumes=[{"name": "s",
                                                     "secret": {"secretName": "other"}}])
    with pytest.raises(errors.Forbidden) as refused:
        await admission.validate(attributes(registry, bad))
    assert refused.value.message == (
        'pods "p" is forbidden: volume with secret.secretName="other" is not allowed '
        "because service account strict does not reference that secret")
    bad = pod(serviceAccountName="strict", imagePullSecrets=[{"name": "other"}])
    with pytest.raises(errors.Forbidden, match=r'imagePullSecrets\[0\].name="other" is not '
                                               r"allowed because service account strict"):
        await admission.validate(attributes(registry, bad))
