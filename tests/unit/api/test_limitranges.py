"""LimitRange arithmetic: the LimitRange's own defaults, container defaults with upstream's
annotation, and min/max/maxLimitRequestRatio per Container, Pod and claim with upstream's
messages and aggregation."""

from __future__ import annotations

from k8py.api import limitranges


def limit_range(*items):
    return limitranges.default_limit_range({"spec": {"limits": [dict(i) for i in items]}})


def pod(*containers, init=()):
    return {"metadata": {"name": "p"},
            "spec": {"containers": list(containers), "initContainers": list(init)}}


def container(name="c", requests=None, limits=None):
    resources = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"name": name, "resources": resources} if resources else {"name": name}


def test_limit_range_defaults_fall_back_to_max_then_default_then_min():
    item = limit_range({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"},
                        "default": {"memory": "256Mi"}})["spec"]["limits"][0]
    assert item["default"] == {"memory": "256Mi", "cpu": "2"}
    assert item["defaultRequest"] == {"memory": "256Mi", "cpu": "2"}
    pod_item = limit_range({"type": "Pod", "max": {"cpu": "2"}})["spec"]["limits"][0]
    assert "default" not in pod_item and "defaultRequest" not in pod_item


def test_container_defaults_and_annotation():
    ranges = limit_range({"type": "Container", "default": {"cpu": "500m", "memory": "1Gi"},
                          "defaultRequest": {"cpu": "0.1"}})
    subject = pod(container("a"), container("b", limits={"cpu": "1"}),
                  init=[container("i", requests={"cpu": "50m", "memory": "1Gi"})])
    defaulted = limitranges.apply_container_defaults(subject, ranges)
    a, b = defaulted["spec"]["containers"]
    assert a["resources"] == {"limits": {"cpu": "500m", "memory": "1Gi"},
                              "requests": {"cpu": "100m", "memory": "1Gi"}}
    # a limit without a request requests the limit (upstream defaulted it already)
    assert b["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"},
                              "requests": {"cpu": "1", "memory": "1Gi"}}
    assert defaulted["metadata"]["annotations"][limitranges.ANNOTATION] == (
        "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for "
        "container a; memory request for container b; memory limit for container b; "
        "cpu, memory limit for init container i")
    assert "resources" not in subject["spec"]["containers"][0]  # the input is not changed
    assert limitranges.apply_container_defaults(subject, limit_range()) is subject


def test_container_bounds():
    ranges = limit_range({"type": "Container", "min": {"cpu": "100m"},
                          "max": {"memory": "1Gi"}, "maxLimitRequestRatio": {"cpu": "2"}})
    fine = pod(container(requests={"cpu": "200m", "memory": "1Gi"},
                         limits={"cpu": "400m", "memory": "1Gi"}))
    assert limitranges.pod_violations(ranges, fine) == []
    bad = pod(container(requests={"cpu": "50m"}, limits={"cpu": "500m", "memory": "2Gi"}))
    problems = limitranges.pod_violations(ranges, bad)
    assert problems == [
        "minimum cpu usage per Container is 100m, but request is 50m",
        "maximum memory usage per Container is 1Gi, but limit is 2Gi",
        "cpu max limit to request ratio per Container is 2, but provided ratio is 10.000000"]
    assert limitranges.aggregate(problems).startswith("[minimum cpu usage")
    # two containers missing the same: each problem is said once
    missing = pod(container("a"), container("b"))
    assert limitranges.aggregate(limitranges.pod_violations(ranges, missing)) == (
        "[minimum cpu usage per Container is 100m.  No request is specified, maximum memory "
        "usage per Container is 1Gi.  No limit is specified, cpu max limit to request ratio "
        "per Container is 2, but no request is specified or request is 0]")
    assert limitranges.aggregate(["x", "x"]) == "x"


def test_pod_bounds_sum_containers():
    ranges = limit_range({"type": "Pod", "max": {"cpu": "1"}})
    subject = pod(container("a", {"cpu": "600m"}, {"cpu": "600m"}),
                  container("b", {"cpu": "600m"}, {"cpu": "600m"}))
    assert limitranges.pod_violations(ranges, subject) == [
        "maximum cpu usage per Pod is 1, but limit is 1200m"]


def test_claim_bounds_look_at_requests_only():
    ranges = limit_range({"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"},
                          "max": {"storage": "10Gi"}})
    claim = {"spec": {"resources": {"requests": {"storage": "20Gi"}}}}
    assert limitranges.claim_violations(ranges, claim) == [
        "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"]
    small = {"spec": {"resources": {"requests": {"storage": "500Mi"}}}}
    assert limitranges.claim_violations(ranges, small) == [
        "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
