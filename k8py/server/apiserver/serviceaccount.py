"""The ServiceAccount admission plugin (upstream's plugin/pkg/admission/serviceaccount).

It acts on pod creates only (not updates: a pod's spec is immutable there anyway, and
pod validation refuses a changed `serviceAccountName`), and not on subresources.

admit (mutating), for a pod that is not a mirror pod:
1. `spec.serviceAccountName` defaults to `default` (the deprecated `serviceAccount` counts,
   as upstream's conversion reads it);
2. the ServiceAccount must exist, else 403 `pods "p" is forbidden: error looking up service
   account <ns>/<name>: serviceaccount "<name>" not found`. The `default` account is looked
   up ten times 100-200 ms apart, as upstream, since the service-account controller creates
   it just after its namespace;
3. unless `automountServiceAccountToken` is false on the pod (which wins) or else on the
   account: the projected volume `kube-api-access-<5 letters>` (a bound token at `token`,
   3607 s; `ca.crt` from the ConfigMap `kube-root-ca.crt`; `namespace` from the downward
   API; mode 0644) and a read-only mount of it at
   `/var/run/secrets/kubernetes.io/serviceaccount` in every init container and container
   that mounts nothing there yet. A pod that already has a `kube-api-access-*` volume keeps
   it (the mounts name it); the volume is added only when some container needed the mount;
4. a pod without `imagePullSecrets` gets the account's.

validate: the account still exists, and with the annotation
`kubernetes.io/enforce-mountable-secrets: "true"` on it, the pod references only the
secrets the account lists. Mirror pods (annotation `kubernetes.io/config.mirror`) are left
unchanged, but may reference no service account, no secret and no projected token.

A namespace that is missing or being deleted is left to the write path, which answers for
it (404, or 403 "being terminated") as upstream's NamespaceLifecycle does before this plugin.
The plugin reads ServiceAccounts straight from the store (`ObjectStore`), the same reads
every GET makes; a malformed pod is passed on untouched for validation to refuse.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from k8py.api import errors
from k8py.api.resources import Registry
from k8py.server.apiserver.admission import CREATE, Attributes
from k8py.server.apiserver.storage import ObjectStore

Obj = dict[str, Any]

DEFAULT_SERVICE_ACCOUNT = "default"
VOLUME_PREFIX = "kube-api-access-"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
ENFORCE_MOUNTABLE_SECRETS = "kubernetes.io/enforce-mountable-secrets"
TOKEN_EXPIRATION = 3607  # upstream's WarnOnlyBoundTokenExpirationSeconds
DEFAULT_MODE = 0o644
DEFAULT_ATTEMPTS = 10
# upstream's SimpleNameGenerator letters (no vowels, no look-alike digits)
_NAME_LETTERS = "bcdfghjklmnpqrstvwxz2456789"
# volume sources that name a secret, and where (besides secret and projected sources)
_SECRET_REFS = {"azureFile": "secretName", "cephfs": "secretRef", "cinder": "secretRef",
                "flexVolume": "secretRef", "iscsi": "secretRef", "rbd": "secretRef",
                "scaleIO": "secretRef", "storageos": "secretRef",
                "csi": "nodePublishSecretRef"}


def token_volume(name: str) -> Obj:
    """The projected volume upstream's plugin adds (TokenVolumeSource)."""
    return {"name": name, "projected": {"sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt",
                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ], "defaultMode": DEFAULT_MODE}}


def _dicts(value: Any) -> list[Obj]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def should_automount(account: Obj, spec: Obj) -> bool:
    """The pod's preference wins, then the account's; true by default."""
    if isinstance(spec.get("automountServiceAccountToken"), bool):
        return spec["automountServiceAccountToken"]
    if isinstance(account.get("automountServiceAccountToken"), bool):
        return account["automountServiceAccountToken"]
    return True


def mount_token(spec: Obj, volume_name: str) -> Obj:
    """`spec` with the token volume mounted in every init container and container that
    mounts nothing at MOUNT_PATH, and the volume added when one of them needed it (unless a
    `kube-api-access-*` volume is there already, whose name is then used)."""
    spec = dict(spec)
    volumes = _dicts(spec.get("volumes"))
    existing = next((v["name"] for v in volumes if isinstance(v.get("name"), str)
                     and v["name"].startswith(VOLUME_PREFIX)), None)
    name = existing or volume_name
    mount = {"name": name, "readOnly": True, "mountPath": MOUNT_PATH}
    needed = False
    for key in ("initContainers", "containers"):
        if not isinstance(spec.get(key), list):
            continue
        containers = []
        for container in spec[key]:
            if isinstance(container, dict):
                mounts = container.get("volumeMounts")
                mounts = mounts if isinstance(mounts, list) else []
                if not any(isinstance(m, dict) and m.get("mountPath") == MOUNT_PATH
                           for m in mounts):
                    container = {**container, "volumeMounts": [*mounts, dict(mount)]}
                    needed = True
            containers.append(container)
        spec[key] = containers
    if needed and existing is None:
        current = spec.get("volumes") if isinstance(spec.get("volumes"), list) else []
        spec["volumes"] = [*current, token_volume(name)]
    return spec


def secret_names(spec: Obj) -> list[str]:
    """Every secret a pod spec names (upstream's VisitPodSecretNames)."""
    found = [ref.get("name", "") for ref in _dicts(spec.get("imagePullSecrets"))]
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in _dicts(spec.get(key)):
            for source in _dicts(container.get("envFrom")):
                if isinstance(source.get("secretRef"), dict):
                    found.append(source["secretRef"].get("name", ""))
            for env in _dicts(container.get("env")):
                ref = (env.get("valueFrom") or {}) if isinstance(env.get("valueFrom"),
                                                                  dict) else {}
                if isinstance(ref.get("secretKeyRef"), dict):
                    found.append(ref["secretKeyRef"].get("name", ""))
    for volume in _dicts(spec.get("volumes")):
        if isinstance(volume.get("secret"), dict):
            found.append(volume["secret"].get("secretName", ""))
        if isinstance(volume.get("projected"), dict):
            for source in _dicts(volume["projected"].get("sources")):
                if isinstance(source.get("secret"), dict):
                    found.append(source["secret"].get("name", ""))
        for kind, field in _SECRET_REFS.items():
            source = volume.get(kind)
            if isinstance(source, dict):
                ref = source.get(field)
                name = ref if isinstance(ref, str) else (ref or {}).get("name", "") \
                    if isinstance(ref, dict) else ""
                if name:
                    found.append(name)
    return found


class ServiceAccount:
    """The plugin; `objects` and `registry` are the API server's own."""

    name = "ServiceAccount"

    def __init__(self, registry: Registry, objects: ObjectStore, *,
                 retry_interval: tuple[float, float] = (0.1, 0.2)):
        self.objects = objects
        self.accounts = registry.get("", "v1", "serviceaccounts")
        self.namespaces = registry.get("", "v1", "namespaces")
        self.retry_interval = retry_interval

    @staticmethod
    def _pod(attributes: Attributes) -> Obj | None:
        """The pod a create writes, if this plugin is concerned with the request."""
        resource = attributes.resource
        if (resource.group, resource.plural) != ("", "pods") or attributes.subresource \
                or attributes.operation != CREATE or not isinstance(attributes.object, dict):
            return None
        pod = attributes.object
        if not isinstance(pod.get("spec"), dict) or not isinstance(
                pod.get("metadata") or {}, dict):
            return None
        return pod

    @staticmethod
    def _mirror(pod: Obj) -> bool:
        annotations = pod.get("metadata", {}).get("annotations")
        return isinstance(annotations, dict) and MIRROR_ANNOTATION in annotations

    @staticmethod
    def _refusal(attributes: Attributes, pod: Obj, message: str) -> errors.Forbidden:
        """upstream's admission.NewForbidden: named by the request, else the object's name,
        else its generateName."""
        metadata = pod.get("metadata") or {}
        name = attributes.name or metadata.get("name") or metadata.get("generateName") \
            or "Unknown"
        return errors.Forbidden(f'pods "{name}" is forbidden: {message}', name=name,
                                kind="pods")

    async def _namespace_open(self, namespace: str) -> bool:
        try:
            current = await self.objects.get(self.namespaces, None, namespace)
        except errors.NotFound:
            return False
        return not current["metadata"].get("deletionTimestamp")

    async def _account(self, attributes: Attributes, pod: Obj, namespace: str, name: str,
                       attempts: int) -> Obj:
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(random.uniform(*self.retry_interval))
            try:
                return await self.objects.get(self.accounts, namespace, name)
            except errors.NotFound:
                continue
        raise self._refusal(attributes, pod, f"error looking up service account "
                                             f"{namespace}/{name}: serviceaccount \"{name}\" "
                                             f"not found")

    def _namespace(self, attributes: Attributes, pod: Obj) -> str:
        return attributes.namespace or (pod.get("metadata") or {}).get("namespace") \
            or "default"

    async def admit(self, attributes: Attributes) -> Obj | None:
        pod = self._pod(attributes)
        if pod is None or self._mirror(pod):
            return None
        namespace = self._namespace(attributes, pod)
        if not await self._namespace_open(namespace):
            return None  # the write path refuses it with the namespace's own error
        spec = dict(pod["spec"])
        name = spec.get("serviceAccountName") or spec.get("serviceAccount") \
            or DEFAULT_SERVICE_ACCOUNT
        if not isinstance(name, str):
            return None  # validation refuses the type
        spec["serviceAccountName"] = name
        attempts = DEFAULT_ATTEMPTS if name == DEFAULT_SERVICE_ACCOUNT else 1
        account = await self._account(attributes, pod, namespace, name, attempts)
        if should_automount(account, spec):
            suffix = "".join(random.choices(_NAME_LETTERS, k=5))
            spec = mount_token(spec, VOLUME_PREFIX + suffix)
        pull_secrets = _dicts(account.get("imagePullSecrets"))
        if not spec.get("imagePullSecrets") and pull_secrets:
            spec["imagePullSecrets"] = [{"name": ref.get("name", "")} for ref in pull_secrets]
        return {**pod, "spec": spec}

    async def validate(self, attributes: Attributes) -> None:
        pod = self._pod(attributes)
        if pod is None:
            return
        spec = pod["spec"]
        if self._mirror(pod):
            self._validate_mirror(attributes, pod, spec)
            return
        namespace = self._namespace(attributes, pod)
        if not await self._namespace_open(namespace):
            return
        name = spec.get("serviceAccountName") or DEFAULT_SERVICE_ACCOUNT
        account = await self._account(attributes, pod, namespace, name, 1)
        annotations = (account.get("metadata") or {}).get("annotations") or {}
        if str(annotations.get(ENFORCE_MOUNTABLE_SECRETS, "")).lower() in ("true", "1", "t"):
            self._limit_secret_references(attributes, pod, account)

    def _validate_mirror(self, attributes: Attributes, pod: Obj, spec: Obj) -> None:
        if spec.get("serviceAccountName"):
            raise self._refusal(attributes, pod, "a mirror pod may not reference service "
                                                 "accounts")
        if secret_names(spec):
            raise self._refusal(attributes, pod, "a mirror pod may not reference secrets")
        for volume in _dicts(spec.get("volumes")):
            projected = volume.get("projected")
            if isinstance(projected, dict) and any(
                    "serviceAccountToken" in source for source in
                    _dicts(projected.get("sources"))):
                raise self._refusal(attributes, pod, "a mirror pod may not use "
                                                     "ServiceAccountToken volume projections")

    def _limit_secret_references(self, attributes: Attributes, pod: Obj,
                                 account: Obj) -> None:
        """upstream's limitSecretReferences: secret volumes, env secretKeyRefs and
        imagePullSecrets must be among the account's."""
        spec, account_name = pod["spec"], account["metadata"]["name"]
        mountable = {ref.get("name") for ref in _dicts(account.get("secrets"))}
        for volume in _dicts(spec.get("volumes")):
            if isinstance(volume.get("secret"), dict):
                secret = volume["secret"].get("secretName", "")
                if secret not in mountable:
                    raise self._refusal(attributes, pod, (
                        f'volume with secret.secretName="{secret}" is not allowed because '
                        f"service account {account_name} does not reference that secret"))
        for key, what in (("initContainers", "init container"), ("containers", "container")):
            for container in _dicts(spec.get(key)):
                for env in _dicts(container.get("env")):
                    ref = env.get("valueFrom") if isinstance(env.get("valueFrom"), dict) else {}
                    secret = ref.get("secretKeyRef") if isinstance(ref.get("secretKeyRef"),
                                                                    dict) else None
                    if secret is not None and secret.get("name") not in mountable:
                        raise self._refusal(attributes, pod, (
                            f"{what} {container.get('name', '')} with envVar "
                            f"{env.get('name', '')} referencing secret.secretName="
                            f"\"{secret.get('name', '')}\" is not allowed because service "
                            f"account {account_name} does not reference that secret"))
        pullable = {ref.get("name") for ref in _dicts(account.get("imagePullSecrets"))}
        for i, ref in enumerate(_dicts(spec.get("imagePullSecrets"))):
            if ref.get("name") not in pullable:
                raise self._refusal(attributes, pod, (
                    f'imagePullSecrets[{i}].name="{ref.get("name", "")}" is not allowed '
                    f"because service account {account_name} does not reference that "
                    f"imagePullSecret"))
