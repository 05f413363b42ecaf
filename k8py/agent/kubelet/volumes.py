"""Pod volumes on the node: materialized under `<pods_dir>/<pod uid>/volumes/<plugin>/<name>`
(upstream's plugin directory names, e.g. `kubernetes.io~configmap`) and bind-mounted into
containers by the runtime.

- emptyDir: a directory (0777, as upstream, so any user in the pod can write); with
  `medium: Memory` a tmpfs (`size=` from `sizeLimit`).
- hostPath: the node's path after upstream's type check (`DirectoryOrCreate` makes it 0755,
  `FileOrCreate` an empty 0644 file in an existing directory, `Directory`, `File`, `Socket`,
  `CharDevice`, `BlockDevice` must already be one).
- persistentVolumeClaim: the host path of the bound claim's hostPath or local volume
  (`k8py.agent.localvolumes.claim_source`; a local-path volume's directory is made 0777),
  read-only when the claim volume says so.
- configMap, secret, downwardAPI, projected: files written the way upstream's AtomicWriter
  does: the payload goes to a fresh `..<UTC timestamp>.<random>` directory, then the `..data`
  symlink is swapped to it with a rename, and each top-level name is a symlink through
  `..data`. A container that mounts the volume (not a `subPath`) therefore sees a complete
  old or a complete new set of files, never a mix. Identical content is not rewritten. Secret
  and projected volumes live on a tmpfs, as upstream, so their content never reaches disk.
  File modes come from `items[].mode`, else `defaultMode` (0644); with `fsGroup` files and
  directories get the group and group-read.
- projected serviceAccountToken: a token from the TokenRequest API
  (`serviceaccounts/<name>/token`, bound to the pod), renewed by `refresh` after 80% of its
  lifetime or 24 h.

`prepare(pod)` makes every volume and returns name → host path; it raises `VolumeError`
(upstream's FailedMount message, e.g. `configmap "x" not found`) while a source is missing, and
the kubelet retries. `refresh(pod)` rewrites content whose source changed (errors keep the old
content and are logged without values). `mounts(...)` turns volumeMounts into CRI mounts
(subPath stays inside its volume; configMap/secret/downwardAPI/projected are read-only, as
upstream since CVE-2017-1002102) plus the container's termination-message file and the pod's
managed /etc/hosts once `write_etc_hosts` made it. `cleanup(uid)` unmounts and removes the pod's
directory. Blocking file work runs in a thread; secret values are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import stat
import tempfile
import time
from typing import Any

from k8py.api import errors, quantity
from k8py.api.resources import builtin
from k8py.agent.kubelet import specs
from k8py.agent.localvolumes import ClaimNotReady, claim_source
from k8py.agent.kubelet.env import (ContainerConfigError, Lookup, client_lookup, field_value,
                                    resource_value)
from k8py.runtime import cri_pb2

log = logging.getLogger(__name__)

NODES = builtin("v1", "nodes")
SERVICEACCOUNTS = builtin("v1", "serviceaccounts")
PLUGINS = {"emptyDir": "kubernetes.io~empty-dir", "configMap": "kubernetes.io~configmap",
           "secret": "kubernetes.io~secret", "downwardAPI": "kubernetes.io~downward-api",
           "projected": "kubernetes.io~projected"}
READ_ONLY_KINDS = ("configMap", "secret", "downwardAPI", "projected")
TMPFS_KINDS = ("secret", "projected")
DATA_LINK = "..data"
DEFAULT_MODE = 0o644
TOKEN_DEFAULT_EXPIRATION = 3600
NODE_CACHE_SECONDS = 30.0

Payload = dict[str, tuple[bytes, int]]  # relative path -> (content, mode)


class VolumeError(Exception):
    """A volume cannot be set up yet (FailedMount); the message is upstream's."""


# --- mounting (root) -------------------------------------------------------------------------

_libc = None


def _libc_call(name: str, *args) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), args[1] if name == "mount" else args[0])


def mount_tmpfs(path: str, size: int | None = None) -> None:
    options = "mode=0777" + (f",size={size}" if size else "")
    _libc_call("mount", b"tmpfs", path.encode(), b"tmpfs", ctypes.c_ulong(0),
               options.encode())


def unmount(path: str) -> None:
    _libc_call("umount2", path.encode(), 2)  # MNT_DETACH


def mounts_under(root: str) -> list[str]:
    """Mount points at or below `root`, deepest first (from /proc/self/mountinfo)."""
    root = os.path.realpath(root)
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                point = line.split()[4].encode().decode("unicode_escape")
                if point == root or point.startswith(root + "/"):
                    found.append(point)
    except OSError:
        return []
    return sorted(set(found), key=len, reverse=True)


# --- the atomic writer -----------------------------------------------------------------------

def _validate_path(path: str) -> None:
    if not path or os.path.isabs(path):
        raise VolumeError(f"invalid path {path!r}: must be relative")
    if len(path) > 4096:
        raise VolumeError(f"invalid path {path!r}: must be less than or equal to 4096 characters")
    parts = path.split("/")
    if any(len(part) > 255 for part in parts):
        raise VolumeError(f"invalid path {path!r}: each element must be at most 255 characters")
    if ".." in parts:
        raise VolumeError(f"invalid path {path!r}: must not contain '..'")
    if path.startswith(".."):
        raise VolumeError(f"invalid path {path!r}: must not start with '..'")


def _read_tree(root: str) -> Payload:
    found: Payload = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                content = f.read()
            found[os.path.relpath(full, root)] = (content, stat.S_IMODE(os.lstat(full).st_mode))
    return found


def write_atomic(target: str, payload: Payload, fs_group: int | None = None) -> bool:
    """Make `target` show exactly `payload` through a `..data` swap; False if it already did."""
    for path in payload:
        _validate_path(path)
    os.makedirs(target, mode=0o755, exist_ok=True)
    data_link = os.path.join(target, DATA_LINK)
    try:
        old_ts = os.readlink(data_link)
    except (FileNotFoundError, OSError):
        old_ts = None
    old: Payload = {}
    if old_ts:
        old = _read_tree(os.path.join(target, old_ts))
        if old == payload:
            return False
    ts_dir = tempfile.mkdtemp(dir=target,
                              prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()))
    os.chmod(ts_dir, 0o755)
    for path, (content, mode) in payload.items():
        full = os.path.join(ts_dir, path)
        os.makedirs(os.path.dirname(full), mode=0o755, exist_ok=True)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, content)
            os.fchmod(fd, mode)
            if fs_group is not None:
                os.fchown(fd, -1, fs_group)
        finally:
            os.close(fd)
    if fs_group is not None:
        for dirpath, _dirs, _files in os.walk(ts_dir):
            os.chown(dirpath, -1, fs_group)
    tmp_link = os.path.join(target, "..data_tmp")
    try:
        os.unlink(tmp_link)
    except FileNotFoundError:
        pass
    os.symlink(os.path.basename(ts_dir), tmp_link)
    os.rename(tmp_link, data_link)
    new_top = {path.split("/", 1)[0] for path in payload}
    for name in new_top:
        visible = os.path.join(target, name)
        if not os.path.lexists(visible):
            os.symlink(os.path.join(DATA_LINK, name), visible)
    for name in {path.split("/", 1)[0] for path in old} - new_top:
        try:
            os.unlink(os.path.join(target, name))
        except FileNotFoundError:
            pass
    if old_ts and old_ts != os.path.basename(ts_dir):
        shutil.rmtree(os.path.join(target, old_ts), ignore_errors=True)
    return True


# --- host paths ------------------------------------------------------------------------------

def check_host_path(path: str, kind: str) -> None:
    """Upstream's hostPath type check (creating for the *OrCreate types)."""
    if kind == "DirectoryOrCreate" and not os.path.exists(path):
        os.makedirs(path, mode=0o755, exist_ok=True)
    elif kind == "FileOrCreate" and not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileNotFoundError:
            raise VolumeError(f"hostPath type check failed: {path} is not a file") from None
        except FileExistsError:
            pass
    checks = {
        "DirectoryOrCreate": (stat.S_ISDIR, "a directory"),
        "Directory": (stat.S_ISDIR, "a directory"),
        "FileOrCreate": (stat.S_ISREG, "a file"),
        "File": (stat.S_ISREG, "a file"),
        "Socket": (stat.S_ISSOCK, "a socket file"),
        "CharDevice": (stat.S_ISCHR, "a character device"),
        "BlockDevice": (stat.S_ISBLK, "a block device"),
    }
    if kind not in checks:
        return
    test, what = checks[kind]
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    if not test(mode):
        raise VolumeError(f"hostPath type check failed: {path} is not {what}")


# --- the manager -----------------------------------------------------------------------------

class VolumeManager:
    def __init__(self, client, pods_dir: str, node_name: str, *, lookup: Lookup | None = None,
                 cluster_domain: str = "cluster.local"):
        self.client = client
        self.pods_dir = pods_dir
        self.node_name = node_name
        self.cluster_domain = cluster_domain
        self.lookup = lookup or client_lookup(client)
        self._node: dict[str, Any] | None = None
        self._node_read = 0.0
        # (pod uid, volume, path in volume) -> (token, issued monotonic, lifetime seconds)
        self._tokens: dict[tuple[str, str, str], tuple[str, float, float]] = {}

    def pod_dir(self, uid: str) -> str:
        return os.path.join(self.pods_dir, uid)

    def volume_dir(self, uid: str, kind: str, name: str) -> str:
        return os.path.join(self.pods_dir, uid, "volumes", PLUGINS[kind], name)

    def termination_message_file(self, uid: str, container_name: str) -> str:
        """Where the container's termination message lands (read it after it exits)."""
        return os.path.join(self.pods_dir, uid, "containers", container_name, "termination-log")

    def etc_hosts_file(self, uid: str) -> str:
        return os.path.join(self.pods_dir, uid, "etc-hosts")

    async def _node_object(self) -> dict[str, Any] | None:
        if self._node is None or time.monotonic() - self._node_read > NODE_CACHE_SECONDS:
            try:
                self._node = await self.client.get(NODES, self.node_name)
                self._node_read = time.monotonic()
            except errors.StatusError:
                pass
        return self._node

    # --- prepare / refresh ----------------------------------------------------------------

    async def prepare(self, pod: dict[str, Any]) -> dict[str, str]:
        """Set up every volume of `pod`; volume name → host path."""
        uid = pod["metadata"]["uid"]
        paths: dict[str, str] = {}
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = volume["name"]
            try:
                paths[name] = await self._prepare_one(pod, volume)
            except VolumeError as e:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from None
            except OSError as e:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : '
                                  f'{e.strerror}: {e.filename}') from None
        os.makedirs(os.path.join(self.pods_dir, uid, "containers"), mode=0o750, exist_ok=True)
        return paths

    async def _prepare_one(self, pod: dict[str, Any], volume: dict[str, Any]) -> str:
        uid = pod["metadata"]["uid"]
        name = volume["name"]
        if "hostPath" in volume:
            source = volume["hostPath"]
            await asyncio.to_thread(check_host_path, source["path"], source.get("type") or "")
            return source["path"]
        if "persistentVolumeClaim" in volume:
            claim = (volume["persistentVolumeClaim"] or {}).get("claimName") or ""
            try:
                path, kind = await claim_source(self.client, pod["metadata"]["namespace"],
                                                claim)
            except ClaimNotReady as exc:
                raise VolumeError(str(exc)) from None
            await asyncio.to_thread(check_host_path, path, kind or "Directory")
            return path
        kind = next((k for k in PLUGINS if k in volume), None)
        if kind is None:
            raise VolumeError(f"volume type of {name!r} is not supported by k8py")
        target = self.volume_dir(uid, kind, name)
        if kind == "emptyDir":
            source = volume["emptyDir"] or {}
            size = None
            if source.get("sizeLimit"):
                size = quantity.amount("memory", source["sizeLimit"])
            await asyncio.to_thread(self._make_empty_dir, target,
                                    source.get("medium") == "Memory", size)
            return target
        payload = await self._payload(pod, kind, volume[kind] or {}, name)
        fs_group = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        await asyncio.to_thread(self._write, target, kind in TMPFS_KINDS, payload, fs_group)
        return target

    @staticmethod
    def _make_empty_dir(target: str, memory: bool, size: int | None) -> None:
        os.makedirs(target, exist_ok=True)
        if memory and not os.path.ismount(target):
            mount_tmpfs(target, size)
        os.chmod(target, 0o777)

    @staticmethod
    def _write(target: str, tmpfs: bool, payload: Payload, fs_group: int | None) -> bool:
        os.makedirs(target, mode=0o755, exist_ok=True)
        if tmpfs and not os.path.ismount(target):
            try:
                mount_tmpfs(target)
            except OSError as e:
                if e.errno != errno.EPERM:
                    raise
                log.warning("cannot mount a tmpfs at %s (not root?): using a directory", target)
        os.chmod(target, 0o755)
        return write_atomic(target, payload, fs_group)

    async def refresh(self, pod: dict[str, Any]) -> bool:
        """Rewrite configMap/secret/downwardAPI/projected volumes whose source changed;
        True if any content changed. A failing source keeps its old content."""
        uid = pod["metadata"]["uid"]
        fs_group = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        changed = False
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            kind = next((k for k in READ_ONLY_KINDS if k in volume), None)
            if kind is None:
                continue
            target = self.volume_dir(uid, kind, volume["name"])
            if not os.path.isdir(target):
                continue  # not prepared (yet): prepare's business
            try:
                payload = await self._payload(pod, kind, volume[kind] or {}, volume["name"])
                changed |= await asyncio.to_thread(self._write, target, kind in TMPFS_KINDS,
                                                   payload, fs_group)
            except (VolumeError, ContainerConfigError, OSError) as e:
                log.warning("pod %s: volume %s not refreshed: %s",
                            specs.format_pod(pod), volume["name"], e)
        return changed

    # --- payloads ---------------------------------------------------------------------------

    async def _payload(self, pod: dict[str, Any], kind: str, source: dict[str, Any],
                       volume_name: str) -> Payload:
        default_mode = source.get("defaultMode", DEFAULT_MODE)
        if kind == "configMap":
            return await self._object_payload(pod, "ConfigMap", source, default_mode)
        if kind == "secret":
            return await self._object_payload(pod, "Secret", source, default_mode)
        if kind == "downwardAPI":
            return await self._downward_payload(pod, source.get("items") or [], default_mode)
        payload: Payload = {}
        for projection in source.get("sources") or []:
            if "configMap" in projection:
                part = await self._object_payload(pod, "ConfigMap", projection["configMap"],
                                                  default_mode)
            elif "secret" in projection:
                part = await self._object_payload(pod, "Secret", projection["secret"],
                                                  default_mode)
            elif "downwardAPI" in projection:
                part = await self._downward_payload(
                    pod, projection["downwardAPI"].get("items") or [], default_mode)
            elif "serviceAccountToken" in projection:
                part = await self._token_payload(pod, projection["serviceAccountToken"],
                                                 volume_name, default_mode)
            else:
                raise VolumeError(f"projected source {sorted(projection)} is not supported "
                                  f"by k8py")
            payload.update(part)
        return payload

    async def _object_payload(self, pod: dict[str, Any], kind: str, source: dict[str, Any],
                              default_mode: int) -> Payload:
        namespace = pod["metadata"].get("namespace", "default")
        name = source.get("name") if kind == "ConfigMap" else (
            source.get("secretName") or source.get("name"))
        optional = bool(source.get("optional"))
        obj = await self.lookup(kind, namespace, name or "")
        if obj is None:
            if optional:
                return {}
            raise VolumeError(f'{kind.lower()} "{name}" not found')
        data: dict[str, bytes] = {}
        if kind == "ConfigMap":
            data.update({k: v.encode() for k, v in (obj.get("data") or {}).items()})
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        else:
            data.update({k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()})
        items = source.get("items") or []
        if not items:
            return {key: (value, default_mode) for key, value in data.items()}
        payload: Payload = {}
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                what = "config" if kind == "ConfigMap" else "secret"
                raise VolumeError(f"{kind.lower()} references non-existent {what} key: "
                                  f"{item['key']}")
            payload[item["path"]] = (data[item["key"]], item.get("mode", default_mode))
        return payload

    async def _downward_payload(self, pod: dict[str, Any], items: list[dict[str, Any]],
                                default_mode: int) -> Payload:
        payload: Payload = {}
        node = None
        for item in items:
            try:
                if "fieldRef" in item:
                    value = field_value(pod, item["fieldRef"]["fieldPath"])
                elif "resourceFieldRef" in item:
                    ref = item["resourceFieldRef"]
                    if node is None:
                        node = await self._node_object()
                    container = next((c for c in (pod.get("spec") or {}).get("containers")
                                      or [] if c["name"] == ref.get("containerName")), None)
                    if container is None:
                        raise VolumeError(f"container {ref.get('containerName')!r} not found")
                    value = resource_value(container, ref["resource"], ref.get("divisor"), node)
                else:
                    continue
            except ContainerConfigError as e:
                raise VolumeError(str(e)) from None
            payload[item["path"]] = (value.encode(), item.get("mode", default_mode))
        return payload

    async def _token_payload(self, pod: dict[str, Any], source: dict[str, Any],
                             volume_name: str, default_mode: int) -> Payload:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        path = source["path"]
        key = (meta["uid"], volume_name, path)
        cached = self._tokens.get(key)
        if cached:
            token, issued, lifetime = cached
            age = time.monotonic() - issued
            if age < 0.8 * lifetime and age < 24 * 3600:
                return {path: (token.encode(), default_mode)}
        sa = spec.get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [source["audience"]] if source.get("audience") else [],
                     "expirationSeconds": source.get("expirationSeconds",
                                                     TOKEN_DEFAULT_EXPIRATION),
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                        "name": meta["name"], "uid": meta["uid"]}}}
        try:
            response = await self.client.create_subresource(
                SERVICEACCOUNTS, sa, meta.get("namespace", "default"), "token", request)
        except errors.StatusError as e:
            raise VolumeError(f'failed to fetch token: {e}') from None
        token = (response.get("status") or {}).get("token")
        if not token:
            raise VolumeError("failed to fetch token: the TokenRequest returned no token")
        lifetime = float((response.get("spec") or {}).get("expirationSeconds")
                         or request["spec"]["expirationSeconds"])
        self._tokens[key] = (token, time.monotonic(), lifetime)
        return {path: (token.encode(), default_mode)}

    # --- mounts -----------------------------------------------------------------------------

    def mounts(self, pod: dict[str, Any], container: dict[str, Any],
               paths: dict[str, str]) -> list[cri_pb2.Mount]:
        """The container's CRI mounts: its volumeMounts, its termination-message file and the
        pod's managed /etc/hosts (when written). Creates missing subPath directories and the
        termination-message file (emptied: one per container run). Raises VolumeError."""
        uid = pod["metadata"]["uid"]
        kinds = {v["name"]: next((k for k in v if k != "name"), "")
                 for v in (pod.get("spec") or {}).get("volumes") or []}
        claims_read_only = {v["name"] for v in (pod.get("spec") or {}).get("volumes") or []
                            if (v.get("persistentVolumeClaim") or {}).get("readOnly")}
        result = []
        targets = set()
        for vm in container.get("volumeMounts") or []:
            if vm["name"] not in paths:
                raise VolumeError(f"cannot find volume {vm['name']!r} to mount into container "
                                  f"{container['name']!r}")
            host = paths[vm["name"]]
            sub = vm.get("subPath") or ""
            if sub:
                host = self._sub_path(host, sub)
            result.append(cri_pb2.Mount(
                container_path=vm["mountPath"], host_path=host,
                readonly=bool(vm.get("readOnly")) or kinds.get(vm["name"]) in READ_ONLY_KINDS
                or vm["name"] in claims_read_only,
                propagation=specs.mount_propagation(vm.get("mountPropagation"))))
            targets.add(vm["mountPath"].rstrip("/") or "/")
        message_path = container.get("terminationMessagePath", "/dev/termination-log")
        if message_path and message_path not in targets:
            file = self.termination_message_file(uid, container["name"])
            os.makedirs(os.path.dirname(file), mode=0o750, exist_ok=True)
            with open(file, "wb"):
                pass
            os.chmod(file, 0o666)
            result.append(cri_pb2.Mount(container_path=message_path, host_path=file))
        hosts = self.etc_hosts_file(uid)
        if "/etc/hosts" not in targets and os.path.exists(hosts):
            result.append(cri_pb2.Mount(container_path="/etc/hosts", host_path=hosts))
        return result

    @staticmethod
    def _sub_path(volume: str, sub: str) -> str:
        if os.path.isabs(sub) or ".." in sub.split("/"):
            raise VolumeError(f"subPath {sub!r} must be a relative path without '..'")
        real_volume = os.path.realpath(volume)
        full = os.path.join(volume, sub)
        if not os.path.lexists(full):
            os.makedirs(full, mode=0o750, exist_ok=True)
        real = os.path.realpath(full)
        if real != real_volume and not real.startswith(real_volume + "/"):
            raise VolumeError(f"subpath {sub!r} not within volume path {volume!r}")
        return real

    async def write_etc_hosts(self, pod: dict[str, Any], pod_ips: list[str]) -> None:
        """The pod's managed /etc/hosts (as upstream's kubelet writes it), once its IPs are
        known; hostNetwork pods keep the runtime's copy of the node's file."""
        spec = pod.get("spec") or {}
        if spec.get("hostNetwork") or not pod_ips:
            return
        hostname, domain = specs.hostname_and_domain(pod, self.cluster_domain)
        lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet",
                 "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
        for ip in pod_ips:
            lines.append(f"{ip}\t{hostname}.{domain}\t{hostname}" if domain
                         else f"{ip}\t{hostname}")
        aliases = spec.get("hostAliases") or []
        if aliases:
            lines += ["", "# Entries added by HostAliases."]
            lines += [f"{a['ip']}\t" + "\t".join(a.get("hostnames") or []) for a in aliases]
        content = ("\n".join(lines) + "\n").encode()
        await asyncio.to_thread(_write_file, self.etc_hosts_file(pod["metadata"]["uid"]),
                                content, 0o644)

    # --- cleanup ----------------------------------------------------------------------------

    async def cleanup(self, pod_uid: str) -> None:
        """Unmount the pod's tmpfs volumes and remove its directory (volumes, files)."""
        await asyncio.to_thread(self._cleanup, pod_uid)
        for key in [k for k in self._tokens if k[0] == pod_uid]:
            del self._tokens[key]

    def _cleanup(self, pod_uid: str) -> None:
        root = self.pod_dir(pod_uid)
        if not os.path.lexists(root):
            return
        for point in mounts_under(root):
            unmount(point)
        if mounts_under(root):
            raise OSError(errno.EBUSY, "mounts remain under the pod directory", root)
        shutil.rmtree(root)


def _write_file(path: str, content: bytes, mode: int) -> None:
    os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        os.write(fd, content)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.rename(tmp, path)
