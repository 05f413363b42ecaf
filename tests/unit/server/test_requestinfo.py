"""RequestInfo as upstream's RequestInfoFactory reads URLs (its table test's cases)."""

from __future__ import annotations

import pytest

from k8py.server.apiserver.requestinfo import RequestInfo, request_info


@pytest.mark.parametrize("method, path, query, expected", [
    ("GET", "/api/v1/namespaces", {}, ("list", "", "v1", "namespaces", "", "", "")),
    ("GET", "/api/v1/namespaces/other", {}, ("get", "", "v1", "namespaces", "", "other",
                                              "other")),
    ("GET", "/api/v1/namespaces/other/pods", {}, ("list", "", "v1", "pods", "", "other", "")),
    ("GET", "/api/v1/namespaces/other/pods/foo", {},
     ("get", "", "v1", "pods", "", "other", "foo")),
    ("HEAD", "/api/v1/namespaces/other/pods/foo", {},
     ("get", "", "v1", "pods", "", "other", "foo")),
    ("GET", "/api/v1/pods", {"watch": "true"}, ("watch", "", "v1", "pods", "", "", "")),
    ("GET", "/api/v1/pods", {"watch": "1"}, ("watch", "", "v1", "pods", "", "", "")),
    ("GET", "/api/v1/pods", {"watch": "false"}, ("list", "", "v1", "pods", "", "", "")),
    ("GET", "/api/v1/watch/pods", {}, ("watch", "", "v1", "pods", "", "", "")),
    ("GET", "/api/v1/watch/namespaces/other/pods", {},
     ("watch", "", "v1", "pods", "", "other", "")),
    ("GET", "/api/v1/namespaces/other/pods", {"fieldSelector": "metadata.name=foo"},
     ("list", "", "v1", "pods", "", "other", "foo")),
    ("GET", "/api/v1/namespaces/other/pods", {"fieldSelector": "metadata.name!=foo"},
     ("list", "", "v1", "pods", "", "other", "")),
    ("POST", "/api/v1/namespaces/other/pods", {}, ("create", "", "v1", "pods", "", "other",
                                                   "")),
    ("PUT", "/api/v1/namespaces/other/pods/foo", {},
     ("update", "", "v1", "pods", "", "other", "foo")),
    ("PATCH", "/api/v1/namespaces/other/pods/foo", {},
     ("patch", "", "v1", "pods", "", "other", "foo")),
    ("DELETE", "/api/v1/namespaces/other/pods/foo", {},
     ("delete", "", "v1", "pods", "", "other", "foo")),
    ("DELETE", "/api/v1/namespaces/other/pods", {},
     ("deletecollection", "", "v1", "pods", "", "other", "")),
    ("GET", "/api/v1/namespaces/other/pods/foo/log", {},
     ("get", "", "v1", "pods", "log", "other", "foo")),
    ("PUT", "/api/v1/namespaces/other/finalize", {},
     ("update", "", "v1", "namespaces", "finalize", "other", "other")),
    ("PUT", "/api/v1/namespaces/other/status", {},
     ("update", "", "v1", "namespaces", "status", "other", "other")),
    ("PATCH", "/apis/apps/v1/namespaces/other/deployments/d/scale", {},
     ("patch", "apps", "v1", "deployments", "scale", "other", "d")),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {},
     ("list", "rbac.authorization.k8s.io", "v1", "clusterroles", "", "", "")),
])
def test_resource_requests(method, path, query, expected):
    info = request_info(method, path, query)
    assert info.resource_request and info.path == path
    assert (info.verb, info.api_group, info.api_version, info.resource, info.subresource,
            info.namespace, info.name) == expected


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("GET", "/healthz"), ("GET", "/api"), ("GET", "/api/v1"), ("GET", "/apis"),
    ("GET", "/apis/apps"), ("GET", "/apis/apps/v1"), ("POST", "/version"),
    ("GET", "/openapi/v3/apis/apps/v1"),
])
def test_non_resource_requests(method, path):
    assert request_info(method, path, {}) == RequestInfo(method.lower(), path=path)


def test_long_running():
    assert request_info("GET", "/api/v1/pods", {"watch": "true"}).long_running
    assert request_info("GET", "/api/v1/namespaces/a/pods/p/log", {}).long_running
    assert request_info("POST", "/api/v1/namespaces/a/pods/p/exec", {}).long_running
    assert not request_info("GET", "/api/v1/pods", {}).long_running
    assert not request_info("GET", "/healthz", {}).long_running
