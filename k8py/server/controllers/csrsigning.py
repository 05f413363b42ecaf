"""The CSR signer: approved CertificateSigningRequests for the three `kubernetes.io` signers
get a certificate from the cluster CA, as kube-controller-manager's `csrsigning` does.

- `kubernetes.io/kube-apiserver-client`: a client certificate for any subject; usages
  within digital signature, key encipherment and client auth, client auth among them.
- `kubernetes.io/kube-apiserver-client-kubelet`: a kubelet's client certificate: subject
  `O=system:nodes`, `CN=system:node:<name>`, no subject alternative names; usages as above.
- `kubernetes.io/kubelet-serving`: a kubelet's serving certificate: the same subject, DNS
  and IP names only; usages within digital signature, key encipherment and server auth,
  server auth among them.
A request the signer cannot honour gets a `Failed` condition (reason
`SignerValidationFailure`) and no certificate. Other signers are left to whoever implements
them. The certificate lives `spec.expirationSeconds` (at least 10 minutes), or at most a year
(upstream's --cluster-signing-duration; `certificates.leaf_validity`, which tests shorten), and
is written through the `status` subresource, followed by the cross-signed CA while a CA
rotation overlaps (`pki.sign_request`). Requests are approved by a human or, for kubelets
renewing their client certificate, by `csrapproving`.
Denied, failed or already issued requests are not touched.
"""

from __future__ import annotations

import base64
import datetime
import logging
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from k8py import certificates
from k8py.api import timestamps
from k8py.api.resources import builtin
from k8py.api.validation import certificate_request
from k8py.client.informer import key_of
from k8py.server import pki
from k8py.server.controllers.base import Controller

log = logging.getLogger(__name__)

CSRS = builtin("certificates.k8s.io/v1", "certificatesigningrequests")
CLIENT = "kubernetes.io/kube-apiserver-client"
KUBELET_CLIENT = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING = "kubernetes.io/kubelet-serving"
MAX_SECONDS = 365 * 24 * 3600
CLIENT_USAGES = {"digital signature", "key encipherment", "client auth"}
SERVING_USAGES = {"digital signature", "key encipherment", "server auth"}


def _conditions(csr: dict[str, Any]) -> dict[str, dict]:
    return {c.get("type"): c for c in (csr.get("status") or {}).get("conditions") or []
            if isinstance(c, dict)}


def problem(signer: str, request: x509.CertificateSigningRequest, usages: set[str]) -> str:
    """Why the signer refuses the request, or ""."""
    server = signer == KUBELET_SERVING
    allowed = SERVING_USAGES if server else CLIENT_USAGES
    needed = "server auth" if server else "client auth"
    if not usages <= allowed or needed not in usages:
        return f"invalid usages for signer {signer}: {sorted(usages)}"
    if signer == CLIENT:
        return ""
    organizations = [a.value for a in request.subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_NAME)]
    names = [a.value for a in request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if organizations != ["system:nodes"] or len(names) != 1 or \
            not names[0].startswith("system:node:"):
        return "subject must be O=system:nodes, CN=system:node:<node name>"
    try:
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = []
    if signer == KUBELET_CLIENT and len(list(sans)):
        return "a kubelet client certificate carries no subject alternative names"
    if any(not isinstance(n, (x509.DNSName, x509.IPAddress)) for n in sans):
        return "a kubelet serving certificate names only DNS names and IP addresses"
    return ""


class CsrSigningController(Controller):
    name = "csrsigning"
    service_account = "certificate-controller"

    def setup(self) -> None:
        self.csrs = self.informer(CSRS)
        self.csrs.add_handlers(self.enqueue_object, lambda old, new: self.enqueue_object(new),
                               lambda obj: None)

    async def reconcile(self, key: str) -> float | None:
        csr = self.csrs.get(key)
        if csr is None:
            return None
        spec, status = csr.get("spec") or {}, csr.get("status") or {}
        conditions = _conditions(csr)
        signer = spec.get("signerName")
        if signer not in (CLIENT, KUBELET_CLIENT, KUBELET_SERVING) or status.get(
                "certificate") or "Approved" not in conditions or "Denied" in conditions \
                or "Failed" in conditions:
            return None
        settings = self.settings
        if not settings.ca_cert_file or not settings.ca_key_file:
            return None  # no CA key here: nothing can sign
        request = certificate_request(spec.get("request"))
        reason = "the request is not a PEM certificate request" if request is None else \
            problem(signer, request, set(spec.get("usages") or ()))
        if reason:
            now = timestamps.now()
            failed = {"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                      "message": reason, "lastUpdateTime": now, "lastTransitionTime": now}
            new_status = {**status, "conditions": [*status.get("conditions", []), failed]}
        else:
            longest = certificates.leaf_validity(
                datetime.timedelta(seconds=MAX_SECONDS)).total_seconds()
            seconds = min(spec.get("expirationSeconds") or longest, longest)
            pem = pki.sign_request(settings.ca_cert_file, settings.ca_key_file, request,
                                   server=signer == KUBELET_SERVING, seconds=seconds)
            new_status = {**status, "certificate": base64.b64encode(pem).decode()}
        await self.client.update_status(CSRS, {**csr, "status": new_status})
        log.info("certificate signing request %s: %s", key_of(csr),
                 f"failed: {reason}" if reason else "issued")
        return None
