"""CertificateSigningRequests: the requester recorded by the API server, `kubectl
certificate approve|deny` through the approval subresource, and the signer issuing
certificates from the cluster CA for the kubernetes.io signers (or failing a request that
breaks its signer's rules)."""

from __future__ import annotations

import base64
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import eventually

CSR_YAML = """apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: %(name)s}
spec:
  request: %(request)s
  signerName: %(signer)s
  expirationSeconds: 86400
  usages: [%(usages)s]
"""


def request_pem(common_name: str, organization: str | None = None) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        names.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names)).sign(
        key, hashes.SHA256())
    return base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()


def csr(name, signer="kubernetes.io/kube-apiserver-client", usages="client auth",
        common_name="jane", organization=None):
    return CSR_YAML % {"name": name, "request": request_pem(common_name, organization),
                       "signer": signer, "usages": usages}


async def _get(cluster, name):
    return json.loads((await cluster.akubectl("get", "csr", name, "-o", "json")).stdout)


async def test_approve_and_issue_a_client_certificate(cluster):
    await cluster.akubectl("apply", "-f", "-", input=csr("jane"))
    got = await _get(cluster, "jane")
    assert got["spec"]["username"] == "system:admin"  # who asked, not what was sent
    assert "system:authenticated" in got["spec"]["groups"]
    pending = (await cluster.akubectl("get", "csr", "jane")).stdout.splitlines()
    assert pending[0].split() == ["NAME", "AGE", "SIGNERNAME", "REQUESTOR",
                                  "REQUESTEDDURATION", "CONDITION"]
    assert pending[1].split()[-1] == "Pending"
    out = await cluster.akubectl("certificate", "approve", "jane")
    assert "approved" in out.stdout

    async def issued():
        obj = await _get(cluster, "jane")
        return obj if (obj.get("status") or {}).get("certificate") else None
    obj = await eventually(issued, timeout=15, interval=0.2, what="the certificate")
    cert = x509.load_pem_x509_certificate(base64.b64decode(obj["status"]["certificate"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "jane"
    with open(cluster.ca_file, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    assert cert.issuer == ca.subject
    assert 86000 < (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() \
        < 86400 + 600
    condition = (await cluster.akubectl("get", "csr", "jane")).stdout.splitlines()[1]
    assert condition.split()[-1] == "Approved,Issued"


async def test_deny_and_signer_rules(cluster):
    await cluster.akubectl("apply", "-f", "-", input=csr("denied"))
    await cluster.akubectl("certificate", "deny", "denied")
    obj = await _get(cluster, "denied")
    assert [c["type"] for c in obj["status"]["conditions"]] == ["Denied"]
    # a kubelet client certificate must name a node in system:nodes
    await cluster.akubectl("apply", "-f", "-", input=csr(
        "bad-kubelet", signer="kubernetes.io/kube-apiserver-client-kubelet",
        usages="digital signature, client auth"))
    await cluster.akubectl("certificate", "approve", "bad-kubelet")

    async def failed():
        got = await _get(cluster, "bad-kubelet")
        return [c for c in got["status"].get("conditions", []) if c["type"] == "Failed"]
    [failure] = await eventually(failed, timeout=15, interval=0.2, what="a Failed condition")
    assert failure["reason"] == "SignerValidationFailure"
    assert "certificate" not in (await _get(cluster, "bad-kubelet"))["status"]


async def test_invalid_requests_are_refused(cluster):
    bad = CSR_YAML % {"name": "garbage", "request": base64.b64encode(b"nope").decode(),
                      "signer": "kubernetes.io/kube-apiserver-client", "usages": "client auth"}
    proc = await cluster.akubectl("apply", "-f", "-", input=bad, check=False)
    assert proc.returncode != 0
    assert "PEM block type must be CERTIFICATE REQUEST" in proc.stderr
