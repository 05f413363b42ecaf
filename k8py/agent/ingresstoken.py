"""The credentials a joined agent's ingress controller reads TLS Secrets with: a token of the
service account `kube-system/k8py-ingress`, bound to the agent's own Node object, kept in
memory and renewed before it expires.

Why this way. The ingress needs the `kubernetes.io/tls` Secrets its Ingresses name, in any
namespace (k3s's Traefik account reads Secrets cluster-wide). A node identity must not read
them: the Node authorizer lets `system:node:<name>` read only the Secrets of its own pods, and
widening `system:nodes` would give every kubelet every Secret. The server's embedded agent
acts as the account in process; a joined agent asks for the account's token:
- RBAC `k8py:ingress-token` (Role in kube-system, group `system:nodes`) allows `create` on
  `serviceaccounts/token` with resourceName `k8py-ingress` and nothing else;
- NodeRestriction admits a node's TokenRequest for that account only bound (v1 Node, name
  and uid) to the requesting node itself (every other node TokenRequest must still be bound
  to a pod on the node, as upstream), so the token dies with that Node object and says in
  its claims which node holds it (`kubernetes.io.node`, audit's `authentication.kubernetes.io
  /node-name`);
- the token lives only in this process (the transport's Authorization header), never on
  disk, for `EXPIRATION` seconds, renewed at 80% of its life as the kubelet renews projected
  tokens; a failed request is retried with backoff while the current token serves.
The transport presents no client certificate (the server would take it over the token) and
trusts the cluster CA the agent joined with; it shares the agent's server list, so it goes to
the same API servers and fails over with the node's transport. A Pod with its own account (k3s's Traefik) was
the other way: it would run only where it is scheduled, not on every node's 80/443 without
a ServiceLB pod per node, and needs an image; the ingress is part of the agent instead.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from k8py.client.loadbalancer import ServerList

log = logging.getLogger(__name__)

NAMESPACE, ACCOUNT = "kube-system", "k8py-ingress"
SERVICE_ACCOUNTS = builtin("v1", "serviceaccounts")
NODES = builtin("v1", "nodes")
EXPIRATION = 3600  # seconds; upstream's default for bound tokens
RENEW_AT = 0.8  # of the lifetime
RETRY_MIN, RETRY_MAX = 1.0, 60.0


def _seconds_until(timestamp: str) -> float:
    when = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC)
    return (when - datetime.datetime.now(datetime.UTC)).total_seconds()


class IngressToken:
    """`client` acts as `kube-system/k8py-ingress` once `ready` is set; `run` keeps it so."""

    def __init__(self, node_client: Client, node_name: str, server: str, ca_file: str,
                 servers: ServerList | None = None):
        self.node_client, self.node_name = node_client, node_name
        self.ca_file = ca_file
        # `servers`: the agent's one list (`agent.apiservers`), so that this transport
        # fails over with the node's and to the servers it learned
        self.transport = HttpTransport(server, ssl.create_default_context(cafile=ca_file),
                                       user_agent="k8py-ingress", servers=servers)
        self.client = Client(self.transport, field_manager="k8py-ingress")
        self.ready = asyncio.Event()
        self.renewals = 0  # tokens obtained so far (tests look at it)

    async def request(self) -> float:
        """A new token in the transport; the seconds it is valid for."""
        node = await self.node_client.get(NODES, self.node_name)
        answer = await self.node_client.create_subresource(
            SERVICE_ACCOUNTS, ACCOUNT, NAMESPACE, "token", {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": EXPIRATION, "boundObjectRef": {
                    "apiVersion": "v1", "kind": "Node", "name": self.node_name,
                    "uid": node["metadata"]["uid"]}}})
        status = answer.get("status") or {}
        # a CA rotation writes the new bundle there (`certrotation`): trusted from now on
        self.transport.tls.load_verify_locations(self.ca_file)
        self.transport.set_token(status["token"])
        self.renewals += 1
        self.ready.set()
        return _seconds_until(status["expirationTimestamp"])

    async def run(self) -> None:
        delay = RETRY_MIN
        try:
            while True:
                try:
                    lifetime = await self.request()
                except (errors.StatusError, KeyError, ValueError) as exc:
                    # no Node yet, the add-on's account missing, a server without the
                    # grant: tried again, the current token (if any) serving meanwhile
                    log.warning("ingress: no token for %s/%s yet (%s); retrying in %.0f s",
                                NAMESPACE, ACCOUNT, getattr(exc, "message", "") or
                                type(exc).__name__, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                delay = RETRY_MIN
                log.debug("ingress: token for %s/%s renewed, valid %.0f s", NAMESPACE,
                          ACCOUNT, lifetime)
                await asyncio.sleep(max(RETRY_MIN, lifetime * RENEW_AT))
        finally:
            await self.client.close()
