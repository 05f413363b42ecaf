"""The cluster CA is published as `kube-root-ca.crt` in every namespace, and kept so."""

from __future__ import annotations

import os

from k8py.api.resources import builtin
from tests.conftest import eventually

CONFIGMAPS = builtin("v1", "configmaps")
NAMESPACES = builtin("v1", "namespaces")


async def test_every_namespace_gets_the_ca_and_keeps_it(cluster):
    client = cluster.client
    with open(os.path.join(cluster.home, "data", "server", "tls", "server-ca.crt")) as f:
        ca = f.read()
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": "fresh"}})

    async def published(namespace):
        try:
            cm = await client.get(CONFIGMAPS, "kube-root-ca.crt", namespace)
        except Exception:
            return False
        return cm["data"] == {"ca.crt": ca}

    for namespace in ("default", "kube-system", "fresh"):
        await eventually(lambda: published(namespace), 10, what=f"CA in {namespace}")
    cm = await client.get(CONFIGMAPS, "kube-root-ca.crt", "fresh")
    await client.update(CONFIGMAPS, {**cm, "data": {"ca.crt": "tampered"}})
    await eventually(lambda: published("fresh"), 10, what="tampered CA put back")
    await client.delete(CONFIGMAPS, "kube-root-ca.crt", "fresh")
    await eventually(lambda: published("fresh"), 10, what="deleted CA recreated")
