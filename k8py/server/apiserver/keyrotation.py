"""Secrets encryption keys over their life, as k3s manages them (`k3s secrets-encrypt`): the
key file `--secrets-encryption` generates, its rotation stages, and the server endpoints the
`k8py secrets-encrypt` command calls.

The file: `<data-dir>/server/cred/encryption-config.json` (mode 0600), written once by
`ensure_generated` with one random 32-byte AES-CBC key named `aescbckey` and the layout k3s
writes: providers `[aescbc {keys}, identity]` for `secrets`. New keys are named
`aescbckey-<UTC time, RFC 3339>`.

Stages (k3s's), recorded in `<data-dir>/server/cred/encryption-state.json` with the hash of
the configuration they were reached with:

    start ─prepare─▶ prepare ─rotate─▶ rotate ─reencrypt─▶ reencrypt_active ─▶ reencrypt_finished
      (reencrypt_finished ─prepare─▶ prepare ...; rotate-keys does all three at once)

- prepare: a new key appended: it reads, it does not write yet.
- rotate: the last key moved first: it writes from now on; the others still read.
- reencrypt: in the background, every object of every encrypted resource that is not sealed
  with the writing key is sealed again (`ObjectStore.reencrypt`: compare-and-swap, so a
  write racing it is never lost); then the last key (the one rotated away from) is removed,
  unless `skip`; then reencrypt_finished. A failure is logged, kept for `status`, and the
  stage goes back to where it was.

Each step writes the file (atomically, 0600) and reloads it into the running server at once
(`Encryption.reload`): no restart. A step from the wrong stage is refused unless `force`.
With a user's file (`--encryption-provider-config`) the keys are the user's: prepare and
rotate are refused (edit the file; the server reloads it) and reencrypt needs no stage.

The endpoints are k3s's: `GET /v1-k8py/encrypt/status` and `PUT /v1-k8py/encrypt/config`
with `{"stage": "prepare" | "rotate" | "reencrypt_active" | "rotate_keys", "force",
"skip"}`; for system:masters only (401 without credentials, 403 for anyone else).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web

from k8py.api import errors
from k8py.api.resources import Registry, Resource
from k8py.server.apiserver import responses
from k8py.server.apiserver.authn import USER_KEY
from k8py.server.apiserver.authz import PRIVILEGED_GROUP
from k8py.server.apiserver.encryptionconfig import (API_VERSION, KEY_TYPES, KIND, ConfigError,
                                                     Encryption, Key)
from k8py.server.apiserver.storage import ObjectStore

log = logging.getLogger(__name__)

START, PREPARE, ROTATE = "start", "prepare", "rotate"
REENCRYPT_REQUEST, REENCRYPT_ACTIVE = "reencrypt_request", "reencrypt_active"
REENCRYPT_FINISHED, ROTATE_KEYS = "reencrypt_finished", "rotate_keys"
FIRST_KEY = "aescbckey"
KEY_BYTES = 32
STATUS_PATH = "/v1-k8py/encrypt/status"
CONFIG_PATH = "/v1-k8py/encrypt/config"


def generated_path(data_dir: str) -> str:
    return os.path.join(data_dir, "server", "cred", "encryption-config.json")


def state_path(data_dir: str) -> str:
    return os.path.join(data_dir, "server", "cred", "encryption-state.json")


def _write_private(path: str, data: bytes) -> None:
    """The file replaced whole (a reader sees the old or the new), mode 0600."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def write_keys(path: str, keys: list[Key]) -> None:
    """The file `--secrets-encryption` keeps, with these AES-CBC keys (the first writes)."""
    document = {"kind": KIND, "apiVersion": API_VERSION, "resources": [{
        "resources": ["secrets"],
        "providers": [{"aescbc": {"keys": [
            {"name": key.name, "secret": base64.b64encode(key.secret).decode()}
            for key in keys]}}, {"identity": {}}]}]}
    _write_private(path, json.dumps(document, separators=(",", ":")).encode())


def ensure_generated(path: str) -> bool:
    """Write the key file with a new key unless it exists; True if written."""
    if os.path.exists(path):
        return False
    write_keys(path, [Key(FIRST_KEY, os.urandom(KEY_BYTES))])
    return True


def new_key(existing: list[Key]) -> Key:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    name, names, n = f"{FIRST_KEY}-{stamp}", {key.name for key in existing}, 1
    while name in names:  # two keys within a second
        n += 1
        name = f"{FIRST_KEY}-{stamp}-{n}"
    return Key(name, os.urandom(KEY_BYTES))


@dataclasses.dataclass
class State:
    stage: str = START
    digest: str = ""  # sha256 of the configuration the stage was reached with
    error: str = ""  # why the last reencrypt failed
    reencrypted: int = 0  # objects the last reencrypt wrote


class KeyRotation:
    """The stages and the steps between them, over one server's `Encryption`."""

    def __init__(self, encryption: Encryption | None, objects: ObjectStore, registry: Registry,
                 state_file: str | None = None,
                 ttl_of: Callable[[Resource], float | None] = lambda resource: None):
        self.encryption, self.objects, self.registry = encryption, objects, registry
        self.state_file, self.ttl_of = state_file, ttl_of
        self.state = self._load_state()
        self.reencrypting: asyncio.Task | None = None

    def _load_state(self) -> State:
        try:
            with open(self.state_file or "", encoding="utf-8") as f:
                data = json.load(f)
            return State(**{f.name: data[f.name] for f in dataclasses.fields(State)
                            if f.name in data})
        except (OSError, ValueError, TypeError):
            return State(digest=self.encryption.config.digest if self.encryption else "")

    def _save(self, **changes: Any) -> None:
        self.state = dataclasses.replace(self.state, **changes)
        if self.state_file:
            _write_private(self.state_file, json.dumps(dataclasses.asdict(self.state)).encode())

    def status(self) -> dict[str, Any]:
        """k3s's EncryptionState, and every key with its type."""
        if self.encryption is None:
            return {"stage": "", "activekey": ""}
        providers = self.encryption.config.providers_for("", "secrets")
        keys, active = [], True
        for provider in providers:
            if provider.kind == "identity":
                active = False
            for key in provider.keys:
                keys.append({"name": key.name, "type": KEY_TYPES[provider.kind],
                             "active": active})
                active = False
        body: dict[str, Any] = {
            "stage": self.state.stage,
            "activekey": next((k["name"] for k in keys if k["active"]), ""),
            "enable": bool(providers) and providers[0].kind != "identity",
            "hashmatch": True,  # one server: its hash is every server's
            "inactivekeys": [k["name"] for k in keys if not k["active"]],
            "keys": keys, "config": self.encryption.path, "managed": self.encryption.managed,
            "hash": self.encryption.config.digest}
        if self.state.error:
            body["error"] = self.state.error
        if self.state.stage == REENCRYPT_FINISHED:
            body["reencrypted"] = self.state.reencrypted
        return body

    def _require(self, stages: tuple[str, ...], force: bool, step: str) -> None:
        if self.encryption is None:
            raise errors.BadRequest("secrets encryption is not enabled: start the server with"
                                    " --secrets-encryption or --encryption-provider-config")
        if step != REENCRYPT_ACTIVE and not self.encryption.managed:
            raise errors.BadRequest(
                f"{step} manages the keys of --secrets-encryption; this server's keys are in "
                f"{self.encryption.path} (--encryption-provider-config): edit that file (the "
                "server reloads it), then run reencrypt")
        if self.reencrypting is not None and not self.reencrypting.done():
            raise errors.BadRequest("another reencrypt is already active")
        if not force and self.state.stage not in stages and (
                self.encryption.managed or step != REENCRYPT_ACTIVE):
            raise errors.BadRequest(
                f"incorrect stage: {self.state.stage} found on this server; {step} follows "
                f"{' or '.join(stages)} (--force skips this check)")

    def _keys(self) -> list[Key]:
        """The AES-CBC keys of the generated file, refusing a file edited into another
        layout (k3s's check)."""
        providers = self.encryption.config.providers_for("", "secrets")
        kinds = sorted(p.kind for p in providers)
        if kinds != ["aescbc", "identity"] or len(self.encryption.config.rules) != 1:
            raise errors.BadRequest(f"non-standard encryption keys found in "
                                    f"{self.encryption.path}")
        return [key for p in providers for key in p.keys]

    def _rewrite_file(self, keys: list[Key]) -> None:
        try:
            write_keys(self.encryption.path, keys)
            self.encryption.reload()
        except (OSError, ConfigError) as exc:
            raise errors.InternalError(f"writing {self.encryption.path}: {exc}") from None

    def prepare(self, force: bool = False) -> None:
        self._require((START, REENCRYPT_FINISHED), force, PREPARE)
        keys = self._keys()
        keys.append(new_key(keys))
        self._rewrite_file(keys)
        log.info("secrets encryption: key %s added (reads only, until rotate)", keys[-1].name)
        self._save(stage=PREPARE, digest=self.encryption.config.digest, error="")

    def rotate(self, force: bool = False) -> None:
        self._require((PREPARE,), force, ROTATE)
        keys = self._keys()
        keys = keys[-1:] + keys[:-1]
        self._rewrite_file(keys)
        log.info("secrets encryption: key %s now encrypts writes", keys[0].name)
        self._save(stage=ROTATE, digest=self.encryption.config.digest, error="")

    def reencrypt(self, force: bool = False, skip: bool = False) -> None:
        self._require((ROTATE,), force, REENCRYPT_ACTIVE)
        previous = self.state.stage
        self._save(stage=REENCRYPT_ACTIVE, error="")
        self.reencrypting = asyncio.create_task(self._reencrypt(previous, skip))

    def rotate_keys(self) -> None:
        """prepare, rotate and reencrypt in one step (k3s's rotate-keys)."""
        self._require((START, REENCRYPT_FINISHED), False, ROTATE_KEYS)
        self.prepare()
        self.rotate()
        self.reencrypt()

    def encrypted_resources(self) -> list[Resource]:
        """One resource per stored collection the configuration encrypts."""
        seen, found = set(), []
        for group, versions in self.registry.groups().items():
            for version in versions:
                for resource in self.registry.in_group_version(group, version):
                    where = (resource.group, resource.plural)
                    if where not in seen and self.encryption.transformer(resource):
                        seen.add(where)
                        found.append(resource)
        return found

    async def _reencrypt(self, previous: str, skip: bool) -> None:
        try:
            total = 0
            for resource in self.encrypted_resources():
                count = await self.objects.reencrypt(resource, ttl=self.ttl_of(resource))
                if count:
                    log.info("secrets encryption: %d %s reencrypted", count, resource.qualified)
                total += count
            if self.encryption.managed and not skip:
                keys = self._keys()
                if len(keys) > 1:
                    self._rewrite_file(keys[:-1])
                    log.info("secrets encryption: key %s removed", keys[-1].name)
            self._save(stage=REENCRYPT_FINISHED, digest=self.encryption.config.digest,
                       reencrypted=total)
            log.info("secrets encryption: reencrypt finished, %d objects written", total)
        except errors.StatusError as exc:
            log.error("secrets encryption: reencrypt failed: %s", exc.message)
            self._save(stage=previous, error=exc.message)
        except Exception as exc:  # never a stage stuck at reencrypt_active
            log.exception("secrets encryption: reencrypt failed")
            self._save(stage=previous, error=f"{type(exc).__name__}: {exc}")


ROTATION_KEY = web.AppKey("key_rotation", KeyRotation)


def add_routes(app: web.Application, rotation: KeyRotation) -> None:
    app[ROTATION_KEY] = rotation
    app.router.add_get(STATUS_PATH, status)
    app.router.add_put(CONFIG_PATH, change)


def _admin(request: web.Request, verb: str) -> None:
    user = request.get(USER_KEY)
    if user is None:
        raise errors.Unauthorized("Unauthorized")
    if PRIVILEGED_GROUP not in user.groups:
        raise errors.Forbidden(f'forbidden: User "{user.name}" cannot {verb} path '
                               f'"{request.path}"')


async def status(request: web.Request) -> web.Response:
    _admin(request, "get")
    return responses.json_response(request.app[ROTATION_KEY].status())


async def change(request: web.Request) -> web.Response:
    _admin(request, "put")
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise errors.BadRequest("the body must be JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("stage"), str):
        raise errors.BadRequest('the body must be {"stage": "<stage>", "force": bool, '
                                '"skip": bool}')
    force, skip = body.get("force") is True, body.get("skip") is True
    rotation: KeyRotation = request.app[ROTATION_KEY]
    steps = {PREPARE: lambda: rotation.prepare(force), ROTATE: lambda: rotation.rotate(force),
             REENCRYPT_ACTIVE: lambda: rotation.reencrypt(force, skip),
             ROTATE_KEYS: rotation.rotate_keys}
    step = steps.get(body["stage"])
    if step is None:
        raise errors.BadRequest(f"unknown stage {body['stage']} requested")
    step()
    return responses.json_response(rotation.status())
