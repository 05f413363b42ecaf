"""A joined agent's ingress credentials against a real API server over HTTPS: the node asks
for a token of `kube-system/k8py-ingress` bound to its own Node, which reads TLS Secrets the
node may not; the grant reaches no further (another node's binding, another account, an
unbound token are refused) and the token dies with the Node; it is renewed by `run`."""

from __future__ import annotations

import asyncio

import pytest

from k8py.agent import ingresstoken
from k8py.agent.ingresstoken import IngressToken
from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.server import daemon
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver import inprocess
from k8py.server.apiserver.inprocess import InProcessTransport
from tests.conftest import eventually
from tests.integration.inloop import running_apiserver

NODES = builtin("v1", "nodes")
SECRETS = builtin("v1", "secrets")
ACCOUNTS = builtin("v1", "serviceaccounts")


def token_request(kind: str, name: str, uid: str) -> dict:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": kind, "name": name,
                                        "uid": uid}}}


@pytest.fixture
async def cluster(tmp_path):
    async with running_apiserver(tmp_path) as server:
        rest = server.app[apiserver.REST_KEY]
        admin = Client(InProcessTransport(rest))
        await admin.create(ACCOUNTS, dict(daemon.INGRESS_SERVICE_ACCOUNT), "kube-system")
        for name in ("node-1", "node-2"):
            await admin.create(NODES, {"metadata": {"name": name}})
        await admin.create(SECRETS, {"metadata": {"name": "site-tls"},
                                     "type": "kubernetes.io/tls",
                                     "data": {"tls.crt": "", "tls.key": ""}}, "default")
        node = Client(InProcessTransport(rest, "k8py-kubelet", inprocess.node("node-1")))
        keeper = IngressToken(node, "node-1", server.url, server.certs.ca_cert)
        try:
            yield admin, node, keeper
        finally:
            await keeper.client.close()
            await admin.close()
            await node.close()


async def test_token_bound_to_the_node_reads_tls_secrets(cluster):
    admin, node, keeper = cluster
    lifetime = await keeper.request()
    assert 3500 < lifetime <= ingresstoken.EXPIRATION
    listed = await keeper.client.list(SECRETS, field_selector="type=kubernetes.io/tls")
    assert [s["metadata"]["name"] for s in listed["items"]] == ["site-tls"]
    with pytest.raises(errors.Forbidden):  # the node itself still may not
        await node.list(SECRETS)
    with pytest.raises(errors.Forbidden):  # nor may the account write them
        await keeper.client.delete(SECRETS, "site-tls", "default")

    # the Node gone, the token is worth nothing
    await admin.delete(NODES, "node-1")

    async def refused():
        try:
            await keeper.client.list(SECRETS)
        except errors.Unauthorized:
            return True
        return False
    await eventually(refused, 15, what="the token refused once its Node is gone")


async def test_the_grant_reaches_no_further(cluster):
    admin, node, _ = cluster
    other = await admin.get(NODES, "node-2")
    with pytest.raises(errors.Forbidden) as refused:
        await node.create_subresource(ACCOUNTS, "k8py-ingress", "kube-system", "token",
                                      token_request("Node", "node-2",
                                                    other["metadata"]["uid"]))
    assert "bound to a different node" in refused.value.message
    with pytest.raises(errors.Forbidden) as refused:  # unbound: upstream's rule holds
        await node.create_subresource(ACCOUNTS, "k8py-ingress", "kube-system", "token",
                                      {"apiVersion": "authentication.k8s.io/v1",
                                       "kind": "TokenRequest", "spec": {}})
    assert "not bound to a pod" in refused.value.message
    own = await admin.get(NODES, "node-1")
    await admin.create(ACCOUNTS, {"metadata": {"name": "other"}}, "kube-system")
    with pytest.raises(errors.Forbidden):  # another account: RBAC says no
        await node.create_subresource(ACCOUNTS, "other", "kube-system", "token",
                                      token_request("Node", "node-1", own["metadata"]["uid"]))
    with pytest.raises(errors.Forbidden) as refused:  # a stale uid
        await node.create_subresource(ACCOUNTS, "k8py-ingress", "kube-system", "token",
                                      token_request("Node", "node-1", "not-the-uid"))
    assert "does not match the UID in record" in refused.value.message


async def test_run_renews_before_expiry(cluster, monkeypatch):
    _, _, keeper = cluster
    monkeypatch.setattr(ingresstoken, "RENEW_AT", 0.0)  # renew at the shortest interval
    task = asyncio.create_task(keeper.run())
    try:
        await eventually(lambda: keeper.renewals >= 2, 10, what="a renewed token")
        assert (await keeper.client.list(SECRETS))["items"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
