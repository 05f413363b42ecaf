"""The review APIs with the official Python client's typed APIs and kubectl 1.32: access
reviews for oneself and for others, `kubectl auth can-i --list`, and TokenReview of the
token file's tokens, service-account tokens (with audiences) and bad tokens."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import pytest
from kubernetes import client as k8s, config
from kubernetes.client.rest import ApiException

from k8py.server import pki
from tests.e2e.conftest import find_kubectl
from tests.integration.apiserver.test_tokens import make_account, request_token


@pytest.fixture
def kubeconfig(server, tmp_path) -> str:
    path = str(tmp_path / "kubeconfig.yaml")
    pki.write_kubeconfig(server.certs, path, server.url, 0o600)
    return path


def run(fn, *args, **kwargs):
    return asyncio.to_thread(fn, *args, **kwargs)


async def test_subject_access_reviews(kubeconfig):
    authz = k8s.AuthorizationV1Api(config.new_client_from_config(config_file=kubeconfig))
    attributes = k8s.V1ResourceAttributes(namespace="default", verb="get",
                                             resource="pods")
    review = await run(authz.create_subject_access_review, k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(user="jane", resource_attributes=attributes)))
    assert review.status.allowed is False and not review.status.denied  # RBAC never denies
    rbac = k8s.RbacAuthorizationV1Api(config.new_client_from_config(config_file=kubeconfig))
    await run(rbac.create_namespaced_role, "default", {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})
    await run(rbac.create_namespaced_role_binding, "default", {
        "metadata": {"name": "readers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "pod-reader"},
        "subjects": [{"kind": "User", "name": "jane"}, {"kind": "Group", "name": "devs"}]})
    deadline = time.monotonic() + 10
    while not review.status.allowed and time.monotonic() < deadline:
        review = await run(authz.create_subject_access_review, k8s.V1SubjectAccessReview(
            spec=k8s.V1SubjectAccessReviewSpec(user="jane", resource_attributes=attributes)))
    assert review.status.allowed is True
    assert review.status.reason == ('RBAC: allowed by RoleBinding "readers/default" of Role '
                                    '"pod-reader" to User "jane"')
    local = await run(authz.create_namespaced_local_subject_access_review, "default",
                      k8s.V1LocalSubjectAccessReview(spec=k8s.V1SubjectAccessReviewSpec(
                          groups=["devs"], resource_attributes=attributes)))
    assert local.status.allowed is True
    with pytest.raises(ApiException) as nobody:  # neither a user nor a group
        await run(authz.create_subject_access_review, k8s.V1SubjectAccessReview(
            spec=k8s.V1SubjectAccessReviewSpec(resource_attributes=attributes)))
    assert nobody.value.status == 422
    assert "at least one of user or group must be specified" in nobody.value.body
    with pytest.raises(ApiException) as elsewhere:  # another namespace than the URL's
        await run(authz.create_namespaced_local_subject_access_review, "kube-system",
                  k8s.V1LocalSubjectAccessReview(spec=k8s.V1SubjectAccessReviewSpec(
                      user="jane", resource_attributes=attributes)))
    assert elsewhere.value.status == 400
    assert "spec.resourceAttributes.namespace must match namespace: kube-system" in \
        elsewhere.value.body


async def test_kubectl_auth_can_i_list(kubeconfig, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": kubeconfig}
    proc = await run(subprocess.run, [find_kubectl(), "--cache-dir", str(tmp_path / "c"),
                                      "auth", "can-i", "--list"],
                     capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert rows[0][:2] == ["Resources", "Non-Resource"]
    assert ["*.*", "[]", "[]", "[*]"] in rows
    assert ["[*]", "[]", "[*]"] in rows


async def test_token_review(server, client, kubeconfig):
    authn = k8s.AuthenticationV1Api(config.new_client_from_config(config_file=kubeconfig))

    async def review(token, audiences=None):
        return await run(authn.create_token_review, k8s.V1TokenReview(
            spec=k8s.V1TokenReviewSpec(token=token, audiences=audiences)))

    admin = await review(server.token)
    assert admin.status.authenticated is True
    assert admin.status.user.username == "system:admin"
    assert "system:masters" in admin.status.user.groups
    await make_account(client, "reviewed")
    _, body = await request_token(client, "reviewed")
    account = await review(body["status"]["token"])
    assert account.status.authenticated is True
    assert account.status.user.username == "system:serviceaccount:default:reviewed"
    assert account.status.audiences  # the API server's own
    _, body = await request_token(client, "reviewed", {"audiences": ["vault"]})
    assert (await review(body["status"]["token"], ["vault"])).status.audiences == ["vault"]
    assert not (await review(body["status"]["token"])).status.authenticated  # not for us
    bad = await review("not-a-token")
    assert not bad.status.authenticated and bad.status.error
    assert "not-a-token" not in (bad.status.error or "")

