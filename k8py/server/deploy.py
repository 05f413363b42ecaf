"""The deploy controller: the manifests directory applied to the cluster, as k3s's.

Every few seconds (`interval`) the directory is scanned (`k8py.server.manifests`: which files,
`.skip`, `--disable`); a file whose mtime or size moved since it was last applied is read,
and applied when its SHA-256 differs from its Addon's `spec.checksum`. At start every file is
applied whatever its checksum, so drift made while the server was down is undone.

- **Addon objects.** Each add-on has an `Addon` (`k8py.io/v1`, namespaced, in kube-system,
  a CRD this controller creates at start through the API) named as the file up to its first
  dot: `spec.source` (the path), `spec.checksum` (of the content last applied without
  error), `status.objects` (what was applied: apiVersion, kind, namespace, name). k3s keeps
  the same object as `k3s.cattle.io/v1` Addon, with a GVK annotation instead of a list.
- **Applying.** Server-side apply, forced (the file is the source of truth, as k3s's apply
  overwrites), one field manager per add-on: `k8py-deploy:<addon>`. CRDs and Namespaces
  first, then the file's order. A document that fails does not stop the others; the Addon's
  checksum is then left unchanged, and the file is tried again at the next scans, less and
  less often (up to `RETRY_LIMIT`), at once when it changes.
- **Pruning.** Objects listed in `status.objects` that a changed file no longer holds are
  deleted once the new content applied without error (k3s's apply prunes by owner the same
  way); an object another add-on's field manager also manages is left alone (moved between
  files). A file removed from the directory leaves its objects and its Addon (k3s's too).
- **Disabling.** A disabled file's objects (those in the file and in `status.objects`) are
  deleted, then the file and its Addon: `--disable NAME`, k3s's flag.
- **Events** on the Addon, with k3s's reasons and messages, source `deploy`:
  `ApplyingManifest`, `AppliedManifest`, `ApplyManifestFailed`, `ParseManifestFailed`,
  `ReadManifestFailed`, `DeletingManifest`. A broken file gets its Event and is not tried
  again until it changes; the other files are applied as usual.

The controller acts as the API server (system:masters) on the in-process transport: an
add-on may hold any object, RBAC included. Files are scanned and read in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Collection
from typing import Any

from k8py.api import errors
from k8py.api.resources import Registry, Resource
from k8py.client.client import Client
from k8py.client.events import EventRecorder
from k8py.server import manifests
from k8py.server.apiserver.crds import CRD_GROUP, CRD_PLURAL

log = logging.getLogger(__name__)

COMPONENT = "deploy"
NAMESPACE = "kube-system"
MANAGER_PREFIX = "k8py-deploy:"
GROUP, VERSION, PLURAL = "k8py.io", "v1", "addons"
INTERVAL = 5.0
RETRY_LIMIT = 60.0  # seconds between tries of a file that fails to apply, at most
# applied before everything else in a file: what the other documents may need to exist
FIRST_KINDS = {"CustomResourceDefinition": 0, "Namespace": 1}
_ADDON_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

_STRING = {"type": "string"}
ADDON_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP, "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "addon", "kind": "Addon",
                  "listKind": "AddonList"},
        "versions": [{
            "name": VERSION, "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "source": _STRING, "checksum": _STRING}},
                "status": {"type": "object", "properties": {
                    "objects": {"type": "array", "items": {"type": "object", "properties": {
                        "apiVersion": _STRING, "kind": _STRING, "namespace": _STRING,
                        "name": _STRING}}}}}}}},
            "additionalPrinterColumns": [
                {"name": "Source", "type": "string", "jsonPath": ".spec.source"},
                {"name": "Checksum", "type": "string", "jsonPath": ".spec.checksum"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
        }]}}


def field_manager(addon: str) -> str:
    return MANAGER_PREFIX + addon


def ref_of(obj: dict[str, Any]) -> dict[str, str]:
    ref = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
           "name": obj["metadata"]["name"]}
    if obj["metadata"].get("namespace"):
        ref["namespace"] = obj["metadata"]["namespace"]
    return ref


class Deployer:
    def __init__(self, client: Client, registry: Registry, directory: str,
                 disables: Collection[str] = (), interval: float = INTERVAL):
        self.client = client  # as the API server; its field manager is not used for objects
        self.registry = registry
        self.directory = directory
        self.disables = frozenset(disables)
        self.interval = interval
        self.recorder = EventRecorder(client, COMPONENT)
        self._done: dict[str, tuple[int, int]] = {}  # path -> (mtime_ns, size) last handled
        # path -> (failed applies in a row, loop time of the next try, (mtime_ns, size))
        self._failing: dict[str, tuple[int, float, tuple[int, int]]] = {}
        self._warned: set[str] = set()

    @property
    def addons(self) -> Resource:
        return self.registry.get(GROUP, VERSION, PLURAL)

    async def run(self) -> None:
        await self.ensure_crd()
        force = True
        while True:
            try:
                await self.sync(force)
                force = False
            except asyncio.CancelledError:
                raise
            except Exception:  # the API or the disk failed us: the next scan tries again
                log.exception("deploying %s", self.directory)
            await asyncio.sleep(self.interval)

    async def ensure_crd(self) -> None:
        crds = self.registry.get(CRD_GROUP, "v1", CRD_PLURAL)
        await self.client.patch(crds, ADDON_CRD["metadata"]["name"], ADDON_CRD,
                                patch_type="apply", force=True)

    async def sync(self, force: bool = False) -> None:
        """One scan: disabled files removed, changed (or, with `force`, all) files applied."""
        files = await asyncio.to_thread(manifests.scan, self.directory, self.disables)
        loop = asyncio.get_running_loop()
        for file in files:
            if file.disabled:
                await self.remove(file)
            elif file.skipped:
                self._done.pop(file.path, None)  # applied again once the .skip goes
            elif force or self._done.get(file.path) != (file.mtime_ns, file.size):
                stamp = (file.mtime_ns, file.size)
                failures, next_try, failed = self._failing.get(file.path, (0, 0.0, None))
                if not force and failed == stamp and loop.time() < next_try:
                    continue  # unchanged since it failed: wait for its next try
                if await self.deploy(file, compare=not force):
                    self._done[file.path] = stamp
                    self._failing.pop(file.path, None)
                else:  # tried again at every scan at first, then less often (at most 60 s)
                    failures = failures + 1 if failed == stamp else 1
                    self._failing[file.path] = (failures, loop.time() + min(
                        self.interval * 2 ** (failures - 1), RETRY_LIMIT), stamp)

    def resolve(self, api_version: str, kind: str) -> Resource | None:
        group, _, version = api_version.rpartition("/")
        for resource in self.registry.in_group_version(group, version):
            if resource.kind == kind:
                return resource
        return None

    async def addon(self, name: str, source: str) -> dict[str, Any]:
        """The add-on's Addon, created if it is new (Events need its uid)."""
        try:
            return await self.client.get(self.addons, name, NAMESPACE)
        except errors.NotFound:
            pass
        with contextlib.suppress(errors.AlreadyExists):
            return await self.client.create(self.addons, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Addon",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"source": source}})
        return await self.client.get(self.addons, name, NAMESPACE)

    def _nameable(self, file: manifests.ManifestFile) -> bool:
        if _ADDON_NAME.match(file.addon) and len(file.addon) <= 253:
            return True
        if file.path not in self._warned:
            self._warned.add(file.path)
            log.warning("manifest %s: %r is not a valid Addon name (lower case letters, "
                        "digits and '-'): not applied", file.path, file.addon)
        return False

    async def deploy(self, file: manifests.ManifestFile, compare: bool) -> bool:
        """Apply one file; whether it is done with until it changes."""
        if not self._nameable(file):
            return True
        addon = await self.addon(file.addon, file.path)
        path = file.path
        try:
            content = await asyncio.to_thread(_read, path)
        except OSError as exc:
            await self._warn(addon, "ReadManifestFailed", f"Read manifest at {_quoted(path)} "
                             f"failed: {exc}")
            return False
        checksum = manifests.checksum(content)
        spec = addon.get("spec") or {}
        if compare and spec.get("checksum") == checksum and spec.get("source") == path:
            return True
        try:
            objects = manifests.parse(content, path)
        except manifests.ManifestError as exc:
            await self._warn(addon, "ParseManifestFailed",
                             f"Parse manifest at {_quoted(path)} failed: {exc}")
            return True  # the same bytes fail the same way: wait for an edit
        await self.recorder.event(addon, "Normal", "ApplyingManifest",
                                  f"Applying manifest at {_quoted(path)}")
        applier = Client(self.client.transport, field_manager=field_manager(file.addon))
        applied, failures = [], []
        for obj in sorted(objects, key=lambda o: FIRST_KINDS.get(o["kind"], 2)):
            try:
                applied.append(await self._apply(applier, obj))
            except errors.StatusError as exc:
                failures.append(f"{obj['kind']} {obj['metadata']['name']}: {exc}")
        previous = (addon.get("status") or {}).get("objects") or []
        if failures:
            await self._warn(addon, "ApplyManifestFailed",
                             f"Applying manifest at {_quoted(path)} failed: "
                             f"{'; '.join(failures)}")
            # what was applied before stays listed, so --disable still finds it
            await self._record(addon, {"source": path}, _union(previous, applied))
            return False
        await self._prune([ref for ref in previous if ref not in applied], file.addon)
        await self.recorder.event(addon, "Normal", "AppliedManifest",
                                  f"Applied manifest at {_quoted(path)}")
        await self._record(addon, {"source": path, "checksum": checksum}, applied)
        log.info("applied manifest %s (%d objects)", path, len(applied))
        return True

    async def _apply(self, applier: Client, obj: dict[str, Any]) -> dict[str, str]:
        resource = self.resolve(obj["apiVersion"], obj["kind"])
        if resource is None:  # kubectl's words for a kind the server does not serve
            raise errors.BadRequest(
                f'no matches for kind "{obj["kind"]}" in version "{obj["apiVersion"]}"')
        obj = dict(obj, metadata=dict(obj["metadata"]))
        namespace = None
        if resource.namespaced:
            namespace = obj["metadata"].get("namespace") or "default"
            obj["metadata"]["namespace"] = namespace
        else:
            obj["metadata"].pop("namespace", None)
        await applier.patch(resource, obj["metadata"]["name"], obj, namespace,
                            patch_type="apply", force=True)
        return ref_of(obj)

    async def _prune(self, refs: list[dict[str, str]], addon: str) -> None:
        """Delete objects a file no longer holds, unless another add-on manages them too."""
        for ref in reversed(refs):
            resource = self.resolve(ref["apiVersion"], ref["kind"])
            if resource is None:
                continue
            try:
                current = await self.client.get(resource, ref["name"], ref.get("namespace"))
                managers = {entry.get("manager", "") for entry in
                            current["metadata"].get("managedFields") or ()}
                if any(m.startswith(MANAGER_PREFIX) and m != field_manager(addon)
                       for m in managers):
                    continue
                await self.client.delete(resource, ref["name"], ref.get("namespace"),
                                         propagation="Background")
                log.info("add-on %s: deleted %s %s", addon, ref["kind"], ref["name"])
            except errors.NotFound:
                pass

    async def remove(self, file: manifests.ManifestFile) -> None:
        """A disabled add-on: its objects, its file and its Addon deleted."""
        if not self._nameable(file):
            return
        addon = await self.addon(file.addon, file.path)
        refs = list((addon.get("status") or {}).get("objects") or [])
        try:
            content = await asyncio.to_thread(_read, file.path)
            refs = _union(refs, [ref_of(o) for o in manifests.parse(content, file.path)])
        except OSError as exc:
            await self._warn(addon, "ReadManifestFailed",
                             f"Read manifest at {_quoted(file.path)} failed: {exc}")
        except manifests.ManifestError as exc:
            await self._warn(addon, "ParseManifestFailed",
                             f"Parse manifest at {_quoted(file.path)} failed: {exc}")
        for ref in reversed(refs):
            resource = self.resolve(ref["apiVersion"], ref["kind"])
            if resource is None:
                continue
            namespace = (ref.get("namespace") or "default") if resource.namespaced else None
            with contextlib.suppress(errors.NotFound):
                await self.client.delete(resource, ref["name"], namespace,
                                         propagation="Background")
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.remove, file.path)
        self._done.pop(file.path, None)
        await self.recorder.event(addon, "Normal", "DeletingManifest",
                                  f"Deleting manifest at {_quoted(file.path)}")
        with contextlib.suppress(errors.NotFound):
            await self.client.delete(self.addons, file.addon, NAMESPACE)
        log.info("add-on %s disabled: deleted %d objects and %s", file.addon, len(refs),
                 file.path)

    async def _record(self, addon: dict[str, Any], spec: dict[str, str],
                      objects: list[dict[str, str]]) -> None:
        await self.client.patch(self.addons, addon["metadata"]["name"],
                                {"spec": spec, "status": {"objects": objects}}, NAMESPACE)

    async def _warn(self, addon: dict[str, Any], reason: str, message: str) -> None:
        log.warning("%s: %s", reason, message)
        await self.recorder.event(addon, "Warning", reason, message)


def _quoted(path: str) -> str:
    """A path in an Event message as k3s's (Go's %q) writes it."""
    return json.dumps(path)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _union(first: list[dict], second: list[dict]) -> list[dict]:
    return first + [ref for ref in second if ref not in first]
