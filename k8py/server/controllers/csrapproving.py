"""The CSR approver: kubelets renewing their own client certificate are approved
automatically, as kube-controller-manager's `csrapproving` controller (sarapprove.go) does.

A pending request (no certificate, not approved nor denied) is recognized as

- `selfnodeclient`: signer `kubernetes.io/kube-apiserver-client-kubelet`, a kubelet client
  request (`kubelet_client_problem` finds nothing), and asked for by the very identity it
  names (`spec.username` equals the subject's CN): a node renewing its own certificate;
- `nodeclient`: the same, asked for by someone else (a bootstrap identity for a new node).

For each recognition in that order, the requester is checked with a SubjectAccessReview
(user, uid, groups and extra from the request's spec) on `create` of
`certificates.k8s.io/certificatesigningrequests/<selfnodeclient|nodeclient>`; the first one
allowed approves: condition `Approved`, reason `AutoApproved`, upstream's message, through the
`approval` subresource. Nothing recognized: left for a human (`kubectl certificate approve`).
Recognized but not allowed: left, and looked at again later (RBAC may change).

The check is one function call, `access(spec, attributes) -> bool` (`Authorize`); by default
it creates a SubjectAccessReview through the API, so whatever authorizer answers those
(RBAC: upstream binds the `system:certificates.k8s.io:certificatesigningrequests:
selfnodeclient` ClusterRole to `system:nodes`) decides.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from k8py.api import timestamps
from k8py.api.resources import builtin
from k8py.api.validation import certificate_request
from k8py.client.client import Client
from k8py.client.informer import key_of
from k8py.server.controllers.base import Controller
from k8py.server.controllers.csrsigning import CSRS, KUBELET_CLIENT

log = logging.getLogger(__name__)

ACCESS_REVIEWS = builtin("authorization.k8s.io/v1", "subjectaccessreviews")
GROUP = "certificates.k8s.io"
# the two sets of usages upstream accepts (the second for keys that are not RSA)
KUBELET_CLIENT_USAGES = ({"digital signature", "key encipherment", "client auth"},
                         {"digital signature", "client auth"})
RECOGNIZERS = (
    ("selfnodeclient", True,
     "Auto approving self kubelet client certificate after SubjectAccessReview."),
    ("nodeclient", False, "Auto approving kubelet client certificate after SubjectAccessReview."),
)

# (the CSR's spec: username, uid, groups, extra; resource attributes) -> allowed
Authorize = Callable[[dict[str, Any], dict[str, str]], Awaitable[bool]]


def kubelet_client_problem(request: x509.CertificateSigningRequest, usages: set[str]) -> str:
    """Why the request is not a kubelet client certificate request, or "" (upstream's
    ValidateKubeletClientCSR, with its messages)."""
    organizations = [a.value for a in request.subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME)]
    if organizations != ["system:nodes"]:
        return "subject organization is not system:nodes"
    try:
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    for kind, message in ((x509.DNSName, "DNS subjectAltNames are not allowed"),
                          (x509.RFC822Name, "Email subjectAltNames are not allowed"),
                          (x509.IPAddress, "IP subjectAltNames are not allowed"),
                          (x509.UniformResourceIdentifier,
                           "URI subjectAltNames are not allowed")):
        if sans is not None and sans.get_values_for_type(kind):
            return message
    names = [a.value for a in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not names or not names[0].startswith("system:node:"):
        return "subject common name does not begin with system:node:"
    if usages not in KUBELET_CLIENT_USAGES:
        return f"usages did not match {sorted(KUBELET_CLIENT_USAGES[0])}"
    return ""


def recognized(csr: dict[str, Any], request: x509.CertificateSigningRequest
               ) -> list[tuple[str, str]]:
    """(subresource, approval message) of each recognizer that takes the request, in order."""
    spec = csr.get("spec") or {}
    if spec.get("signerName") != KUBELET_CLIENT or \
            kubelet_client_problem(request, set(spec.get("usages") or ())):
        return []
    names = [a.value for a in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [(subresource, message) for subresource, self_only, message in RECOGNIZERS
            if not self_only or spec.get("username") == names[0]]


def subject_access_review(client: Client) -> Authorize:
    """Ask the API server, as upstream's approver does."""
    async def access(spec: dict[str, Any], attributes: dict[str, str]) -> bool:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": spec.get("username", ""), "uid": spec.get("uid", ""),
                           "groups": list(spec.get("groups") or []),
                           "extra": dict(spec.get("extra") or {}),
                           "resourceAttributes": attributes}}
        answer = await client.create(ACCESS_REVIEWS, review)
        return bool((answer.get("status") or {}).get("allowed"))
    return access


class CsrApprovingController(Controller):
    name = "csrapproving"
    service_account = "certificate-controller"
    RETRY_SECONDS = 30.0
    access: Authorize | None = None  # None: a SubjectAccessReview through the client

    def setup(self) -> None:
        self.csrs = self.informer(CSRS)
        self.csrs.add_handlers(self.enqueue_object, lambda old, new: self.enqueue_object(new),
                               lambda obj: None)
        if self.access is None:
            self.access = subject_access_review(self.client)

    async def reconcile(self, key: str) -> float | None:
        csr = self.csrs.get(key)
        if csr is None:
            return None
        status = csr.get("status") or {}
        types = {c.get("type") for c in status.get("conditions") or [] if isinstance(c, dict)}
        if status.get("certificate") or "Approved" in types or "Denied" in types:
            return None
        request = certificate_request((csr.get("spec") or {}).get("request"))
        if request is None:
            log.info("certificate signing request %s: unable to parse the request", key)
            return None
        tried = []
        for subresource, message in recognized(csr, request):
            tried.append(subresource)
            if await self.access(csr["spec"], {"group": GROUP, "resource": CSRS.plural,
                                               "verb": "create", "subresource": subresource}):
                now = timestamps.now()
                approved = {"type": "Approved", "status": "True", "reason": "AutoApproved",
                            "message": message, "lastUpdateTime": now,
                            "lastTransitionTime": now}
                await self.client.update(CSRS, {**csr, "status": {
                    **status, "conditions": [*(status.get("conditions") or []), approved]}},
                    subresource="approval")
                log.info("certificate signing request %s approved (%s)", key_of(csr),
                         subresource)
                return None
        if tried:
            log.info("recognized csr %r as %s but subject access review was not approved",
                     csr["metadata"]["name"], tried)
            return self.RETRY_SECONDS
        return None
