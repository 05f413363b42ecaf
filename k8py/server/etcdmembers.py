"""Removing a deleted server's etcd member, as k3s's etcd member removal controller does.

Every server with an embedded etcd runs `keep_members`; only the one whose local member is
the etcd leader acts, so servers never race each other. Every few seconds it:

- marks each Node named as an etcd member: the annotation `etcd.k8py.io/member-name` (the
  member's name) and the finalizer `etcd.k8py.io/member`, so that deleting the Node waits
  for its member to go;
- for each Node being deleted that holds the finalizer: `MemberRemove` of the annotated
  member (gone already is fine), then drops the finalizer and the Node goes.

`kubectl delete node <server>` therefore takes that server out of the etcd cluster (its etcd
then stops: a removed member cannot rejoin with its old data). `k8py etcd member remove NAME`
does the same without the Node.
"""

from __future__ import annotations

import asyncio
import logging

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.server.store.backend import StoreError
from k8py.server.store.etcdclient import EtcdClient, MemberNotFound

log = logging.getLogger(__name__)

FINALIZER = "etcd.k8py.io/member"
MEMBER_ANNOTATION = "etcd.k8py.io/member-name"
NODES = builtin("v1", "nodes")


async def remove_member(etcd: EtcdClient, name: str) -> bool:
    """Remove the member named `name`; whether there was one."""
    for member in await etcd.member_list():
        if member.name == name:
            try:
                await etcd.member_remove(member.ID)
            except MemberNotFound:
                return False
            log.info("etcd: removed member %s (%x)", name, member.ID)
            return True
    return False


async def _is_leader(etcd: EtcdClient) -> bool:
    status = await etcd.status()
    return status.leader == status.header.member_id


async def reconcile(client: Client, etcd: EtcdClient) -> None:
    """One pass over the Nodes (see the module docstring)."""
    if not await _is_leader(etcd):
        return
    members = {m.name for m in await etcd.member_list() if m.name}
    for node in (await client.list(NODES))["items"]:
        metadata = node["metadata"]
        name = metadata["name"]
        finalizers = metadata.get("finalizers") or []
        if metadata.get("deletionTimestamp"):
            if FINALIZER not in finalizers:
                continue
            member = (metadata.get("annotations") or {}).get(MEMBER_ANNOTATION, name)
            await remove_member(etcd, member)
            kept = [f for f in finalizers if f != FINALIZER]
            await client.patch(NODES, name, {"metadata": {
                "finalizers": kept or None, "resourceVersion": metadata["resourceVersion"]}})
        elif name in members and FINALIZER not in finalizers:
            await client.patch(NODES, name, {"metadata": {
                "finalizers": [*finalizers, FINALIZER],
                "annotations": {MEMBER_ANNOTATION: name},
                "resourceVersion": metadata["resourceVersion"]}})
            log.info("etcd: node %s is etcd member %s", name, name)


async def keep_members(client: Client, etcd: EtcdClient, interval: float = 2.0) -> None:
    """`reconcile` every `interval` seconds, until cancelled."""
    try:
        while True:
            try:
                await reconcile(client, etcd)
            except (errors.StatusError, StoreError) as exc:
                log.info("etcd member removal: %s", exc)
            await asyncio.sleep(interval)
    finally:
        etcd.close()
