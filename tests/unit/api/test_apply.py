"""Server-side apply: ownership, removal of fields no longer applied, conflicts, force."""

from __future__ import annotations

import pytest

from k8py.api import apply, errors, fieldsets
from k8py.api.schemas import for_kind

DEPLOYMENT = for_kind("apps", "v1", "Deployment")


def config(image="nginx:1", replicas=None, labels=None, side=True):
    containers = [{"name": "web", "image": image}]
    if side:
        containers.append({"name": "side", "image": "busybox"})
    spec = {"selector": {"matchLabels": {"app": "x"}},
            "template": {"spec": {"containers": containers}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": labels or {"a": "1"}}, "spec": spec}


def managers(obj):
    return {(e["manager"], e["operation"]) for e in obj["metadata"]["managedFields"]}


def test_field_set_uses_merge_keys():
    paths = fieldsets.field_set(config(), DEPLOYMENT)
    web = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"web"}')
    assert web in paths and web + ("f:image",) in paths
    tree = fieldsets.to_fields_v1(paths)
    assert fieldsets.from_fields_v1(tree) == paths
    assert tree["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']["."] == {}


def test_first_apply_creates_and_owns():
    obj = apply.apply(None, config(), "me", False, "apps/v1", DEPLOYMENT)
    assert managers(obj) == {("me", "Apply")}
    fields = obj["metadata"]["managedFields"][0]["fieldsV1"]
    assert "f:name" not in fields["f:metadata"], "identity fields are nobody's"


def test_dropping_fields_from_the_config_removes_them():
    live = apply.apply(None, config(), "me", False, "apps/v1", DEPLOYMENT)
    after = apply.apply(live, config(image="nginx:2", labels={"b": "2"}, side=False), "me",
                        False, "apps/v1", DEPLOYMENT)
    assert after["metadata"]["labels"] == {"b": "2"}
    assert after["spec"]["template"]["spec"]["containers"] == [{"name": "web",
                                                                 "image": "nginx:2"}]


def test_conflict_with_another_manager_then_force():
    live = apply.apply(None, config(replicas=2), "me", False, "apps/v1", DEPLOYMENT)
    scaled = {**live, "spec": {**live["spec"], "replicas": 5}}
    scaled = apply.record_update(live, scaled, "scaler", "apps/v1", DEPLOYMENT, "scale")
    assert ("scaler", "Update") in managers(scaled)
    with pytest.raises(errors.Conflict) as info:
        apply.apply(scaled, config(replicas=2), "me", False, "apps/v1", DEPLOYMENT)
    assert str(info.value) == ('Apply failed with 1 conflict: conflict with "scaler" using '
                               'apps/v1: .spec.replicas')
    forced = apply.apply(scaled, config(replicas=2), "me", True, "apps/v1", DEPLOYMENT)
    assert forced["spec"]["replicas"] == 2
    assert ("scaler", "Update") not in managers(forced), "the scaler lost its only field"


def test_equal_values_are_shared_not_conflicts():
    live = apply.apply(None, config(replicas=2), "me", False, "apps/v1", DEPLOYMENT)
    other = apply.apply(live, config(replicas=2), "you", False, "apps/v1", DEPLOYMENT)
    assert managers(other) == {("me", "Apply"), ("you", "Apply")}
    # "you" stops applying replicas: "me" still owns it, so it stays.
    after = apply.apply(other, config(), "you", False, "apps/v1", DEPLOYMENT)
    assert after["spec"]["replicas"] == 2


def test_create_then_apply_of_the_same_content_is_clean():
    """A plain create (the Python client is `OpenAPI-Generator`) owns the defaulted object,
    list-map elements included; applying the same content shares the fields, no conflict."""
    from k8py.api import meta
    from k8py.api.resources import builtin
    body = config()
    body["spec"]["template"]["metadata"] = {"labels": {"app": "x"}}
    created = meta.prepare_create(builtin("apps/v1", "deployments"), body, "default")
    created = apply.record_update(None, created, "OpenAPI-Generator", "apps/v1", DEPLOYMENT)
    applied = apply.apply(created, body, "kubectl", False, "apps/v1", DEPLOYMENT)
    assert managers(applied) == {("OpenAPI-Generator", "Update"), ("kubectl", "Apply")}


def test_list_map_elements_conflict_only_through_differing_leaves():
    live = apply.apply(None, config(), "me", False, "apps/v1", DEPLOYMENT)
    with pytest.raises(errors.Conflict) as info:
        apply.apply(live, config(image="nginx:2"), "you", False, "apps/v1", DEPLOYMENT)
    assert str(info.value) == ('Apply failed with 1 conflict: conflict with "me" using '
                               'apps/v1: .spec.template.spec.containers[name="web"].image')
