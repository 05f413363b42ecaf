"""Renewing the server's leaf certificates while it runs, so a server up for longer than a
certificate lives keeps working ("cluster dead after one year").

At start `pki.ensure_pki` and friends already re-issued every leaf that was due (k3s's
rule). Then one `certificates.keep_renewed` loop per leaf renews it between 70% and 90% of
its lifetime (upstream's kubelet rule) and makes its users take it, without a restart:

| leaf | file | after renewal |
| --- | --- | --- |
| serving | `serving.crt` | the listening context loads it: new connections get it |
| admin | `client-admin.crt` | the admin kubeconfig is written again with it |
| kube-apiserver → kubelets | `client-kube-apiserver.crt` | the kubelet client context loads it |
| the embedded agent's kubelet serving | `agent/tls/serving-kubelet.crt` | the kubelet server follows its file (`tls.follow`) |

Connections already open keep the certificate they started with; a peer checks a
certificate's dates when it connects, so they stay valid. Issuing (key generation, signing,
fsync) runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from k8py import certificates, tls
from k8py.server import pki


async def _in_thread(issue: Callable[[], None], then: Callable[[], None] | None = None) -> None:
    await asyncio.to_thread(issue)
    if then is not None:
        then()


async def keep_server_certificates(certs: pki.PKI, *, serving: Callable[[], None],
                                   serving_context: ssl.SSLContext,
                                   kubelet_client: ssl.SSLContext | None,
                                   kubeconfig: Callable[[], None]) -> None:
    """Renew the serving, admin and kubelet-client certificates until cancelled.
    `serving()` issues a serving certificate for the server's names; `kubeconfig()` writes
    the admin kubeconfig."""
    client_cert, client_key = pki.kubelet_client_paths(certs)
    loops = [
        certificates.keep_renewed("API server serving", certs.serving_cert, lambda: _in_thread(
            serving, lambda: tls.reload(serving_context, certs.serving_cert,
                                        certs.serving_key))),
        certificates.keep_renewed("admin client", certs.admin_cert, lambda: _in_thread(
            lambda: (pki.issue_admin(certs), kubeconfig()))),
        certificates.keep_renewed("API server kubelet client", client_cert, lambda: _in_thread(
            lambda: pki.issue_kubelet_client(certs),
            None if kubelet_client is None else
            lambda: tls.reload(kubelet_client, client_cert, client_key))),
    ]
    await asyncio.gather(*loops)


async def keep_kubelet_serving(certs: pki.PKI, agent_dir: str, node: str,
                               addresses: tuple[str, ...]) -> None:
    """Renew the embedded agent's kubelet serving certificate until cancelled; its server
    picks the new file up itself."""
    cert_path, _ = pki.kubelet_serving_paths(agent_dir)
    await certificates.keep_renewed("kubelet serving", cert_path, lambda: asyncio.to_thread(
        pki.issue_kubelet_serving, certs, agent_dir, node, addresses))
