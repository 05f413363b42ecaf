"""ControllerRevisions: the template history of DaemonSets and StatefulSets.

Each distinct pod template a workload has had is one `apps/v1` ControllerRevision, owned by
the workload (controller ownerReference), named `<owner>-<hash>`, labelled with the
template's labels plus `controller-revision-hash: <hash>`, with a `revision` number that
grows with every template change (a rollback to an old template renumbers that revision as
the newest, as upstream does). Its `data` is upstream's patch that restores the template:
`{"spec": {"template": {..., "$patch": "replace"}}}` (what `kubectl rollout undo` applies).
Pods carry their revision in the same label, which is how both controllers tell old pods from
new: DaemonSet pods its hash, StatefulSet pods its name (`<owner>-<hash>`), as upstream.

The hash is fnv-32a over the template as canonical JSON and the owner's
`status.collisionCount`, written in upstream's safe alphabet (no vowels, so no words). When a
revision of that name exists with another template (a hash collision), the collision count
goes up by one and the next attempt gets another name; the caller stores the count in the
owner's status.

`History` works from a shared ControllerRevision informer: reads come from the cache; only
creates, renumbers and deletes go to the API server.
"""

from __future__ import annotations

import json
from typing import Any

from k8py.api import errors
from k8py.api.jsondoc import clone
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.informer import Informer, by_owner_uid
from k8py.server.controllers.base import controller_of, owner_reference

CONTROLLER_REVISIONS = builtin("apps/v1", "controllerrevisions")
REVISION_HASH = "controller-revision-hash"

_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # upstream's rand.SafeEncodeString alphabet
MAX_COLLISIONS = 10


def _fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def template_hash(template: dict[str, Any], collision_count: int = 0) -> str:
    """The name suffix and label value of a template's revision."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += collision_count.to_bytes(4, "little")
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)]
                   for c in str(_fnv32a(data)))


def revision_data(template: dict[str, Any]) -> dict[str, Any]:
    """What a revision stores: upstream's patch replacing `spec.template`."""
    return {"spec": {"template": {**clone(template), "$patch": "replace"}}}


def template_of(revision: dict[str, Any]) -> dict[str, Any]:
    """The pod template a revision restores."""
    template = dict(((revision.get("data") or {}).get("spec") or {}).get("template") or {})
    template.pop("$patch", None)
    return template


def revision_number(revision: dict[str, Any]) -> int:
    return int(revision.get("revision") or 0)


class History:
    """The revisions of one kind of owner, from a shared informer."""

    def __init__(self, client: Client, informer: Informer):
        self.client = client
        self.revisions = informer
        informer.add_index("owner", by_owner_uid)

    def owned(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        """The owner's revisions, oldest revision number first."""
        uid = owner["metadata"]["uid"]
        mine = [r for r in self.revisions.by_index("owner", uid)
                if (controller_of(r) or {}).get("uid") == uid]
        return sorted(mine, key=revision_number)

    async def current(self, owner: dict[str, Any],
                      revisions: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
        """The revision of the owner's template as it is now, made or renumbered so it is the
        newest; and the collision count that named it."""
        template = (owner.get("spec") or {}).get("template") or {}
        data = revision_data(template)
        collisions = int((owner.get("status") or {}).get("collisionCount") or 0)
        newest = max((revision_number(r) for r in revisions), default=0)
        matching = [r for r in revisions if r.get("data") == data]
        if matching:
            # Several revisions of one template only arise from races; use the newest.
            found = max(matching, key=revision_number)
            if revision_number(found) < newest:
                found = await self.client.patch(
                    CONTROLLER_REVISIONS, found["metadata"]["name"],
                    {"revision": newest + 1}, found["metadata"]["namespace"])
            return found, collisions
        for _ in range(MAX_COLLISIONS):
            revision = self._new(owner, template, data, newest + 1, collisions)
            try:
                return await self.client.create(CONTROLLER_REVISIONS, revision), collisions
            except errors.AlreadyExists:
                existing = await self.client.get(CONTROLLER_REVISIONS,
                                                 revision["metadata"]["name"],
                                                 owner["metadata"]["namespace"])
                if existing.get("data") == data and \
                        (controller_of(existing) or {}).get("uid") == owner["metadata"]["uid"]:
                    return existing, collisions  # ours, not yet in the cache
                collisions += 1
        raise errors.Conflict(f"{owner['metadata']['name']}: {MAX_COLLISIONS} revision name "
                              "collisions in a row")

    @staticmethod
    def _new(owner: dict[str, Any], template: dict[str, Any], data: dict[str, Any],
             number: int, collisions: int) -> dict[str, Any]:
        hash_ = template_hash(template, collisions)
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels[REVISION_HASH] = hash_
        return {"apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {"name": f"{owner['metadata']['name']}-{hash_}",
                             "namespace": owner["metadata"]["namespace"], "labels": labels,
                             "ownerReferences": [owner_reference(owner)]},
                "data": data, "revision": number}

    async def truncate(self, owner: dict[str, Any], revisions: list[dict[str, Any]],
                       keep_names: set[str], live_hashes: set[str]) -> None:
        """Delete the oldest revisions beyond `revisionHistoryLimit`, except those named in
        `keep_names` and those whose hash a live pod still carries."""
        limit = (owner.get("spec") or {}).get("revisionHistoryLimit", 10)
        old = [r for r in revisions if r["metadata"]["name"] not in keep_names]
        surplus = len(old) - limit
        for revision in old:  # oldest first
            if surplus <= 0:
                return
            if (revision["metadata"].get("labels") or {}).get(REVISION_HASH) in live_hashes:
                continue
            try:
                await self.client.delete(CONTROLLER_REVISIONS, revision["metadata"]["name"],
                                         revision["metadata"]["namespace"])
            except errors.NotFound:
                pass
            surplus -= 1


def revision_hash(revision: dict[str, Any]) -> str:
    """The hash label of a revision (its name's suffix, for revisions made elsewhere)."""
    labels = revision["metadata"].get("labels") or {}
    return labels.get(REVISION_HASH) or revision["metadata"]["name"].rsplit("-", 1)[-1]
