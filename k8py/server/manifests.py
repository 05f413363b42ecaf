"""The manifests directory (`<data-dir>/server/manifests/`): which files in it are managed,
what objects each holds, and how packaged add-ons are written into it.

k3s's rules (its `pkg/deploy`), so a k3s user's habits carry over:

- Every `.yaml`, `.yml` and `.json` file under the directory, subdirectories included, is
  one add-on; dotfiles and other extensions are ignored.
- `<file>.skip` beside a file (`traefik.yaml.skip` for `traefik.yaml`) leaves that file
  unmanaged: not applied, its objects left as they are.
- An add-on is named by its file's name up to the first dot (`local-storage.yaml` →
  `local-storage`): the name of its `Addon` object.
- A file is disabled (`--disable NAME`) when its name without its last extension is NAME, or
  when it lies in a subdirectory NAME: the deploy controller then deletes its objects and the
  file. Disabling wins over `.skip`.
- A file holds one or more YAML documents (JSON for `.json`), each an object or a `List`
  of objects; empty documents are ignored.

Nothing here talks to the API server (`k8py.server.deploy` does): scanning and parsing are
plain functions of the files, run in a worker thread by the caller.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Collection
from typing import Any

import yaml

EXTENSIONS = (".yaml", ".yml", ".json")
SKIP_SUFFIX = ".skip"


class ManifestError(ValueError):
    """A file that is not a list of Kubernetes objects (its message says where and why)."""


@dataclasses.dataclass(frozen=True)
class ManifestFile:
    path: str
    relative: str  # to the manifests directory, for messages and disable matching
    mtime_ns: int
    size: int
    disabled: bool  # --disable names it: delete its objects and the file
    skipped: bool  # a .skip file beside it: leave it alone

    @property
    def addon(self) -> str:
        """The add-on's name: the file name up to the first dot (k3s's)."""
        return os.path.basename(self.path).split(".", 1)[0]


def is_manifest(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(EXTENSIONS)


def is_disabled(relative: str, disables: Collection[str]) -> bool:
    """In a subdirectory named in `disables`, or named there without its last extension."""
    parts = relative.split(os.sep)
    for depth in range(1, len(parts)):
        if os.path.join(*parts[:depth]) in disables:
            return True
    return os.path.splitext(parts[-1])[0] in disables


def scan(directory: str, disables: Collection[str] = ()) -> list[ManifestFile]:
    """The manifests under `directory` in path order (none if it does not exist)."""
    found: list[ManifestFile] = []
    for root, dirs, names in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        present = set(names)
        for name in sorted(names):
            if not is_manifest(name):
                continue
            path = os.path.join(root, name)
            try:
                info = os.stat(path)
            except FileNotFoundError:  # removed while we looked
                continue
            relative = os.path.relpath(path, directory)
            found.append(ManifestFile(path, relative, info.st_mtime_ns, info.st_size,
                                      disabled=is_disabled(relative, disables),
                                      skipped=name + SKIP_SUFFIX in present))
    return found


def checksum(content: bytes) -> str:
    """The hex SHA-256 of a file's bytes (what an Addon's spec.checksum holds, as k3s's)."""
    return hashlib.sha256(content).hexdigest()


def parse(content: bytes, name: str) -> list[dict[str, Any]]:
    """The objects a manifest holds, in order; ManifestError for anything else."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not UTF-8: {exc}") from None
    try:
        if name.lower().endswith(".json"):
            documents = [json.loads(text)] if text.strip() else []
        else:
            documents = list(yaml.load_all(text, Loader=yaml.CSafeLoader))
    except ValueError as exc:  # json's messages name a position only
        raise ManifestError(f"not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"not valid YAML: {_yaml_problem(exc)}") from None
    objects: list[dict[str, Any]] = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        if not isinstance(document, dict):
            raise ManifestError(f"document {index}: not an object")
        kind = document.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and "items" in document:
            items = document["items"] or []
            if not isinstance(items, list):
                raise ManifestError(f"document {index}: items is not a list")
            objects.extend(_checked(item, f"document {index} item {i}")
                           for i, item in enumerate(items))
        else:
            objects.append(_checked(document, f"document {index}"))
    return objects


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without the snippet of the file PyYAML quotes: a manifest
    may hold a Secret, and this message goes to the log and to an Event."""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _checked(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: not an object")
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise ManifestError(f"{where}: Object 'Kind' is missing"
                                if field == "kind" else f"{where}: no apiVersion")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) \
            or not metadata["name"]:
        raise ManifestError(f"{where}: {obj['kind']} has no metadata.name")
    return obj


def stage(directory: str, name: str, content: str, disables: Collection[str] = ()) -> bool:
    """Write a packaged add-on as `<directory>/<name>.yaml` unless `name` is disabled or a
    `.skip` beside it says the user keeps their own (k3s writes its packaged manifests at
    every start the same way, so an upgrade brings the new ones). Returns whether the file
    was (re)written; an unchanged file is left as it is (its mtime too)."""
    if name in disables:
        return False
    path = os.path.join(directory, name + ".yaml")
    if os.path.exists(path + SKIP_SUFFIX):
        return False
    data = content.encode("utf-8")
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(directory, mode=0o700, exist_ok=True)
    partial = path + ".tmp"  # not a manifest name: never picked up half written
    with open(partial, "wb") as f:
        f.write(data)
    os.replace(partial, path)
    return True
