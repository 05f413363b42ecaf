"""The `default` ServiceAccount: present in every namespace, new ones included, and recreated
when deleted."""

from __future__ import annotations

from k8py.api import errors
from k8py.api.resources import builtin
from tests.conftest import eventually

NAMESPACES = builtin("v1", "namespaces")
SERVICE_ACCOUNTS = builtin("v1", "serviceaccounts")


async def _account(client, namespace: str):
    try:
        return await client.get(SERVICE_ACCOUNTS, "default", namespace)
    except errors.NotFound:
        return None


async def test_default_service_account_everywhere(cluster):
    client = cluster.client
    for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
        await eventually(lambda: _account(client, namespace), 5,
                         what=f"default ServiceAccount in {namespace}")
    await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": "team-a"}})
    first = await eventually(lambda: _account(client, "team-a"), 5,
                             what="default ServiceAccount in a new namespace")
    await client.delete(SERVICE_ACCOUNTS, "default", "team-a")

    async def recreated():
        account = await _account(client, "team-a")
        return account is not None and account["metadata"]["uid"] != first["metadata"]["uid"]

    await eventually(recreated, 5, what="the deleted ServiceAccount recreated")
    # kubectl sees it too
    out = await cluster.akubectl("get", "serviceaccount", "default", "-n", "team-a",
                                 "-o", "name")
    assert out.stdout.strip() == "serviceaccount/default"
