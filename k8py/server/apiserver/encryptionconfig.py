"""Upstream's EncryptionConfiguration file (`--encryption-provider-config`), read, checked and
turned into a transformer per resource (`encryption`); and the server's live copy of it,
reloaded when the file changes.

The file (YAML or JSON):

    apiVersion: apiserver.config.k8s.io/v1
    kind: EncryptionConfiguration
    resources:
      - resources: [secrets, configmaps, deployments.apps, "*.", "*.*"]
        providers:                   # the first encrypts writes; all are tried on reads
          - aescbc:    {keys: [{name: key1, secret: <base64 of 16, 24 or 32 bytes>}]}
          - aesgcm:    {keys: [...]}  # 16, 24 or 32 bytes
          - secretbox: {keys: [...]}  # 32 bytes
          - identity: {}

A resource is named `<plural>` (core group) or `<plural>.<group>`; `*.<group>` is every
resource of a group (`*.` the core group's) and `*.*` every resource. A resource takes the
providers of its exact name, else of its group's wildcard, else of `*.*` (upstream's
order); a name under a wildcard of an earlier rule is refused. Nothing here is lenient
where upstream is strict: its validation messages (field paths, `REDACTED` for secrets),
wrapped as `error while parsing file: ...`. Unknown fields are refused too (a misspelt
provider would silently store plaintext). KMS providers are not supported.

`Encryption` is what the API server holds: the file's path, its current `EncryptionConfig`
(replaced whole on reload, so a request sees one or the other) and whether k8py wrote the
file (`--secrets-encryption`, whose keys `k8py secrets-encrypt` manages: `keyrotation`).
A reload that finds the file broken keeps the configuration in force and logs why, as
upstream's automatic reload does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any

import yaml

from k8py.api.resources import Resource
from k8py.server.apiserver import encryption

log = logging.getLogger(__name__)

API_VERSION = "apiserver.config.k8s.io/v1"
KIND = "EncryptionConfiguration"
AES_KEY_SIZES = (16, 24, 32)
SECRETBOX_KEY_SIZES = (32,)
PROVIDERS = ("kms", "aesgcm", "aescbc", "secretbox", "identity")
KEY_TYPES = {"aescbc": "AES-CBC", "aesgcm": "AES-GCM", "secretbox": "SecretBox",
             "identity": "Identity"}
RELOAD_INTERVAL = 5.0  # seconds between looks at the file


class ConfigError(Exception):
    """The file is unusable; the message is one line, safe to show (no key material)."""


@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    secret: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class Provider:
    kind: str  # aescbc, aesgcm, secretbox, identity
    keys: tuple[Key, ...] = ()


class EncryptionConfig:
    """A checked configuration: the providers and transformer of each group/resource."""

    def __init__(self, rules: list[tuple[tuple[str, ...], tuple[Provider, ...]]],
                 digest: str):
        self.rules = rules
        self.digest = digest  # sha256 of the file's bytes (what `secrets-encrypt status` shows)
        by_resource: dict[tuple[str, str], list[Provider]] = {}
        for resources, providers in rules:
            for name in resources:
                group, plural = parse_group_resource(name)
                for masking in ((group, "*"), ("*", "*")):
                    if masking in by_resource and masking != (group, plural):
                        raise ConfigError(
                            f"error while parsing file: resource {_yaml_name(group, plural)!r}"
                            f" is masked by earlier rule {_yaml_name(*masking)!r}"
                            .replace("'", '"'))
                by_resource.setdefault((group, plural), []).extend(providers)
        self.providers = {gr: tuple(p) for gr, p in by_resource.items()}
        self._transformers = {gr: _transformer(p) for gr, p in self.providers.items()}
        self._lookups: dict[tuple[str, str], encryption.PrefixTransformers | None] = {}

    def _match(self, group: str, plural: str) -> tuple[str, str] | None:
        for candidate in ((group, plural), (group, "*"), ("*", "*")):
            if candidate in self.providers:
                return candidate
        return None

    def transformer(self, resource: Resource) -> encryption.PrefixTransformers | None:
        """How `resource`'s objects are stored; None: as they are (not configured)."""
        gr = (resource.group, resource.plural)
        try:
            return self._lookups[gr]
        except KeyError:
            match = self._match(*gr)
            found = self._lookups[gr] = self._transformers[match] if match else None
            return found

    def providers_for(self, group: str, plural: str) -> tuple[Provider, ...]:
        match = self._match(group, plural)
        return self.providers[match] if match else ()


def parse_group_resource(name: str) -> tuple[str, str]:
    """(group, resource) as upstream's schema.ParseGroupResource: `deployments.apps`."""
    resource, _, group = name.partition(".")
    return group, resource


def _yaml_name(group: str, plural: str) -> str:
    return "*." if (group, plural) == ("", "*") else (f"{plural}.{group}" if group else plural)


def _transformer(providers: tuple[Provider, ...]) -> encryption.PrefixTransformers:
    entries = []
    for provider in providers:
        if provider.kind == "identity":
            entries.append((b"", encryption.Identity()))
            continue
        cipher, prefix, what = {
            "aescbc": (encryption.AESCBC, encryption.AESCBC_PREFIX, "AES"),
            "aesgcm": (encryption.AESGCM, encryption.AESGCM_PREFIX, "AES"),
            "secretbox": (encryption.Secretbox, encryption.SECRETBOX_PREFIX, "Secretbox"),
        }[provider.kind]
        entries.append(encryption.keyed(
            prefix, [(key.name, cipher(key.secret)) for key in provider.keys],
            f"no matching key was found for the provided {what} transformer"))
    return encryption.PrefixTransformers(entries, "no matching prefix found")


def load(path: str) -> EncryptionConfig:
    """The configuration in the file at `path`; ConfigError says what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"error while parsing file: error opening encryption provider "
                          f"configuration file {path!r}: {exc.strerror}".replace("'", '"')
                          ) from None
    return parse(data, path)


def parse(data: bytes, path: str = "") -> EncryptionConfig:
    if not data.strip():
        raise ConfigError(f'error while parsing file: encryption provider configuration file '
                          f'"{path}" is empty')
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"error while parsing file: not valid YAML or JSON{where}") from None
    try:
        rules = _rules(document)
    except _Invalid as exc:
        raise ConfigError(f"error while parsing file: {exc}") from None
    return EncryptionConfig(rules, hashlib.sha256(data).hexdigest())


class _Invalid(Exception):
    pass


def _fields(value: Any, path: str, allowed: tuple[str, ...]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(f"{path or 'the file'}: expected a mapping, got {_type(value)}")
    for name in value:
        if name not in allowed:
            where = f"{path}.{name}" if path else str(name)
            raise _Invalid(f'strict decoding error: unknown field "{where}"')
    return value


def _list(value: Any, path: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Invalid(f"{path}: expected a list, got {_type(value)}")
    return value


def _type(value: Any) -> str:
    return {str: "string", bool: "boolean", int: "number", float: "number", list: "list",
            dict: "mapping"}.get(type(value), type(value).__name__)


def _rules(document: Any) -> list[tuple[tuple[str, ...], tuple[Provider, ...]]]:
    top = _fields(document, "", ("apiVersion", "kind", "resources"))
    if not top.get("kind"):
        raise _Invalid("Object 'Kind' is missing in the file")
    if top.get("apiVersion") != API_VERSION or top.get("kind") != KIND:
        raise _Invalid(f'no kind "{top.get("kind")}" is registered for version '
                       f'"{top.get("apiVersion") or ""}"')
    problems: list[str] = []
    rules = []
    entries = _list(top.get("resources"), "resources")
    if not entries:
        raise _Invalid("resources: Required value: at least one resources is required")
    for i, entry in enumerate(entries):
        at = f"resources[{i}]"
        entry = _fields(entry, at, ("resources", "providers"))
        names = _list(entry.get("resources"), f"{at}.resources")
        if not all(isinstance(n, str) for n in names):
            raise _Invalid(f"{at}.resources: expected a list of strings")
        if not names:
            problems.append(f"{at}.resources: Required value: at least one {at}.resources is "
                            "required")
        problems += _check_names(names, f"{at}.resources")
        providers = []
        listed = _list(entry.get("providers"), f"{at}.providers")
        if not listed:
            problems.append(f"{at}.providers: Required value: at least one {at}.providers is "
                            "required")
        for j, item in enumerate(listed):
            provider, found = _provider(item, f"{at}.providers[{j}]", problems)
            if provider is not None:
                providers.append(provider)
            elif not found:
                problems.append(
                    f"{at}.providers[{j}]: Invalid value: {{}}: provider does not contain any "
                    "of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity")
        rules.append((tuple(names), tuple(providers)))
    if problems:  # upstream's aggregate: one alone, several as [a, b]
        raise _Invalid(problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]")
    return rules


def _check_names(names: list[str], at: str) -> list[str]:
    problems = []
    pairs = [parse_group_resource(n) for n in names]
    duplicate = overlap = False
    for i, first in enumerate(pairs):  # upstream's validateResourceOverlap, step for step
        for j, second in enumerate(pairs):
            if i == j:
                continue
            if first == second and not duplicate:
                duplicate = True
                continue
            if overlap:
                continue
            if first == ("*", "*") or (first[0] == second[0] and "*" in (first[1], second[1])):
                overlap = True
    if duplicate:
        problems.append(f"{at}: Invalid value: {_go_strings(names)}: the same resource cannot "
                        "be specified multiple times")
    if overlap:
        problems.append(f"{at}: Invalid value: {_go_strings(names)}: using overlapping "
                        "resources such as 'secrets' and '*.' in the same resource list is "
                        "not allowed as they will be masked")
    for k, name in enumerate(names):
        group, plural = pairs[k]
        detail = (
            "resource name should not contain capital letters" if name.lower() != name else
            "use '*.' to encrypt all the resources from core API group or *.* to encrypt all "
            "resources" if name == "*" else
            "resources which do not have REST API/s cannot be encrypted"
            if name in ("apiserveripinfo", "serviceipallocations",
                        "servicenodeportallocations") else
            "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use "
            "'events' instead in the config file" if group == "events.k8s.io" else
            "'extensions' group has been removed and cannot be used for encryption"
            if group == "extensions" else
            "encrypting the same resource across groups is not supported"
            if group == "*" and plural != "*" else None)
        if detail:
            problems.append(f'{at}[{k}]: Invalid value: "{name}": {detail}')
    return problems


def _go_strings(names: list[str]) -> str:
    return "[]string{" + ", ".join(json.dumps(n) for n in names) + "}"


def _provider(item: Any, at: str, problems: list[str]) -> tuple[Provider | None, bool]:
    """(the provider, whether the element named one at all)."""
    fields = _fields(item, at, PROVIDERS)
    named = [name for name in PROVIDERS if fields.get(name) is not None]
    if not named:
        return None, False
    if len(named) > 1:
        problems.append(f"{at}: Invalid value: {json.dumps(named)}: more than one provider "
                        "specified in a single element, should split into different list "
                        "elements")
        return None, True
    kind = named[0]
    if kind == "kms":
        problems.append(f"{at}.kms: Invalid value: \"kms\": KMS providers are not supported "
                        "by k8py (use aescbc, aesgcm or secretbox)")
        return None, True
    if kind == "identity":
        _fields(fields[kind], f"{at}.identity", ())
        return Provider("identity"), True
    settings = _fields(fields[kind], f"{at}.{kind}", ("keys",))
    keys_at = f"{at}.{kind}.keys"
    listed = _list(settings.get("keys"), keys_at)
    if not listed:
        problems.append(f"{keys_at}: Required value: at least one keys is required")
        return None, True
    sizes = SECRETBOX_KEY_SIZES if kind == "secretbox" else AES_KEY_SIZES
    keys = []
    for k, entry in enumerate(listed):
        key = _key(_fields(entry, f"{keys_at}[{k}]", ("name", "secret")), f"{keys_at}[{k}]",
                   sizes, problems)
        if key is not None:
            keys.append(key)
    return (Provider(kind, tuple(keys)) if len(keys) == len(listed) else None), True


def _key(fields: dict, at: str, sizes: tuple[int, ...], problems: list[str]) -> Key | None:
    name, secret = fields.get("name") or "", fields.get("secret") or ""
    if not isinstance(name, str) or not isinstance(secret, str):
        problems.append(f"{at}: name and secret must be strings")
        return None
    ok = True
    if not name:
        problems.append(f"{at}.name: Required value: name is a mandatory field for a key")
        ok = False
    if not secret:
        problems.append(f"{at}.secret: Required value: secret is a mandatory field for a key")
        return None
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        problems.append(f'{at}.secret: Invalid value: "REDACTED": secrets must be base64 '
                        "encoded")
        return None
    if len(raw) not in sizes:
        problems.append(f'{at}.secret: Invalid value: "REDACTED": secret is not of the '
                        f"expected length, got {len(raw)}, expected one of "
                        f"[{' '.join(map(str, sizes))}]")
        return None
    return Key(name, raw) if ok else None


class Encryption:
    """The configuration in force, from the file at `path`. `managed`: k8py wrote the file
    (`--secrets-encryption`) and `k8py secrets-encrypt` may rewrite its keys."""

    def __init__(self, path: str, config: EncryptionConfig, managed: bool = False):
        self.path, self.config, self.managed = path, config, managed
        self._seen = _stamp(path)

    @classmethod
    def open(cls, path: str, managed: bool = False) -> Encryption:
        return cls(path, load(path), managed)

    def transformer(self, resource: Resource) -> encryption.PrefixTransformers | None:
        return self.config.transformer(resource)

    def reload(self) -> bool:
        """Read the file again; True if the configuration changed. A broken file raises
        ConfigError and leaves the configuration in force."""
        self._seen = _stamp(self.path)
        return self._install(load(self.path))

    def _install(self, config: EncryptionConfig) -> bool:
        if config.digest == self.config.digest:
            return False
        self.config = config
        log.info("encryption configuration %s reloaded (sha256 %s)", self.path,
                 config.digest[:12])
        return True

    async def follow(self, interval: float = RELOAD_INTERVAL) -> None:
        """Reload whenever the file changes (its inode, size or mtime), until cancelled."""
        while True:
            await asyncio.sleep(interval)
            stamp = _stamp(self.path)
            if stamp == self._seen:
                continue
            self._seen = stamp
            try:
                self._install(await asyncio.to_thread(load, self.path))
            except ConfigError as exc:
                log.error("encryption configuration %s not reloaded, the one in force stays:"
                          " %s", self.path, exc)


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
