"""The CSR approver's rules, upstream's (sarapprove.go, ValidateKubeletClientCSR): what a
kubelet client request is, and which of selfnodeclient / nodeclient it is."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from k8py import certificates
from k8py.server.controllers.csrapproving import kubelet_client_problem, recognized

SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
USAGES = {"digital signature", "client auth"}


def request(cn="system:node:n1", orgs=("system:nodes",), sans=()):
    names = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    names.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), False)
    return builder.sign(certificates.new_key(), hashes.SHA256())


def csr(username, signer=SIGNER, usages=USAGES):
    return {"spec": {"signerName": signer, "usages": sorted(usages), "username": username}}


def test_kubelet_client_requests_follow_upstream():
    assert kubelet_client_problem(request(), USAGES) == ""
    assert kubelet_client_problem(request(), USAGES | {"key encipherment"}) == ""  # RSA set
    assert kubelet_client_problem(request(orgs=()), USAGES) == \
        "subject organization is not system:nodes"
    assert kubelet_client_problem(request(orgs=("system:nodes", "system:masters")),
                                  USAGES) == "subject organization is not system:nodes"
    assert kubelet_client_problem(request(sans=[x509.DNSName("n1")]), USAGES) == \
        "DNS subjectAltNames are not allowed"
    assert kubelet_client_problem(request(sans=[x509.IPAddress(ipaddress.ip_address(
        "10.0.0.1"))]), USAGES) == "IP subjectAltNames are not allowed"
    assert kubelet_client_problem(request(cn="jane"), USAGES) == \
        "subject common name does not begin with system:node:"
    assert kubelet_client_problem(request(), {"client auth"}) == \
        "usages did not match ['client auth', 'digital signature', 'key encipherment']"
    assert kubelet_client_problem(request(), USAGES | {"server auth"}).startswith(
        "usages did not match")


def test_self_node_client_only_for_the_node_it_names():
    own = recognized(csr("system:node:n1"), request())
    assert [name for name, _ in own] == ["selfnodeclient", "nodeclient"]
    assert own[0][1] == ("Auto approving self kubelet client certificate after "
                         "SubjectAccessReview.")
    other = recognized(csr("system:node:n2"), request())  # a node asking for another's name
    assert [name for name, _ in other] == ["nodeclient"]
    assert recognized(csr("system:node:n1", signer="kubernetes.io/kube-apiserver-client"),
                      request()) == []
    assert recognized(csr("system:node:n1", usages={"client auth"}), request()) == []
