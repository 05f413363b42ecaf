"""Strategic merge patch with the upstream schemas' merge keys and directives."""

from __future__ import annotations

import pytest

from k8py.api.patching import PatchError
from k8py.api.schemas import for_kind
from k8py.api.strategic import strategic_merge_patch

DEPLOYMENT = for_kind("apps", "v1", "Deployment")
POD = for_kind("", "v1", "Pod")


def deployment(containers, **spec):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": containers}}, **spec}}


def containers_of(obj):
    return obj["spec"]["template"]["spec"]["containers"]


def test_schema_lookup():
    assert DEPLOYMENT is not None and POD is not None
    assert for_kind("example.com", "v1", "Widget") is None
    field = POD.field("spec").field("containers")
    assert field.merge_key == "name" and "merge" in field.patch_strategies


def test_containers_merge_by_name():
    original = deployment([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}
    result = strategic_merge_patch(original, patch, DEPLOYMENT)
    assert containers_of(result) == [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]
    assert containers_of(original)[1]["image"] == "b:1", "the input was modified"


def test_delete_directive_and_append():
    original = deployment([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "$patch": "delete"}, {"name": "c", "image": "c:1"}]}}}}
    result = strategic_merge_patch(original, patch, DEPLOYMENT)
    assert [c["name"] for c in containers_of(result)] == ["b", "c"]


def test_set_element_order_as_kubectl_apply_sends_it():
    original = deployment([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
        "containers": [{"name": "a", "image": "a:2"}]}}}}
    result = strategic_merge_patch(original, patch, DEPLOYMENT)
    assert containers_of(result) == [{"name": "b", "image": "b:1"}, {"name": "a", "image": "a:2"}]


def test_env_merges_by_name_and_null_deletes_fields():
    original = deployment([{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}],
                            "args": ["--one"]}])
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "Y", "value": "2"}], "args": ["--two"],
         "image": None}]}}}}
    (container,) = containers_of(strategic_merge_patch(original, patch, DEPLOYMENT))
    assert container["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert container["args"] == ["--two"], "args has no merge strategy: replaced"
    assert "image" not in container


def test_retain_keys_on_strategy():
    original = deployment([], strategy={"type": "RollingUpdate",
                                        "rollingUpdate": {"maxSurge": 1}})
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    result = strategic_merge_patch(original, patch, DEPLOYMENT)
    assert result["spec"]["strategy"] == {"type": "Recreate"}


def test_primitive_lists_union_and_delete_from():
    original = {"metadata": {"name": "p", "finalizers": ["a", "b"]}, "spec": {}}
    patch = {"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}}
    result = strategic_merge_patch(original, patch, POD)
    assert result["metadata"]["finalizers"] == ["b", "c"]


def test_replace_directives():
    original = {"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}}
    patch = {"metadata": {"labels": {"$patch": "replace", "c": "3"}}}
    assert strategic_merge_patch(original, patch, POD)["metadata"]["labels"] == {"c": "3"}
    original = deployment([{"name": "a"}, {"name": "b"}])
    patch = {"spec": {"template": {"spec": {"containers": [{"$patch": "replace"},
                                                             {"name": "z"}]}}}}
    assert containers_of(strategic_merge_patch(original, patch, DEPLOYMENT)) == [{"name": "z"}]


def test_bad_patches():
    with pytest.raises(PatchError):
        strategic_merge_patch({}, [1, 2], POD)
    with pytest.raises(PatchError):
        strategic_merge_patch(deployment([{"name": "a"}]), {"spec": {"template": {"spec": {
            "containers": [{"image": "no-name"}]}}}}, DEPLOYMENT)
    with pytest.raises(PatchError):
        strategic_merge_patch({}, {"$patch": "explode"}, POD)
