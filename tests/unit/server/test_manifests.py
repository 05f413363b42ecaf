"""The manifests directory's rules (k3s's): which files are add-ons, `.skip`, `--disable`
by name or subdirectory, parsing, and staging a packaged add-on."""

from __future__ import annotations

import os

import pytest

from k8py.server import manifests


def test_scan_marks_skipped_and_disabled_files(tmp_path):
    for name in ("a.yaml", "a.yaml.skip", "b.json", "c.yml", ".hidden.yaml", "notes.txt",
                 "traefik.yaml", "sub/d.yaml", "ingress/e.yaml"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("")
    found = {f.relative: f for f in manifests.scan(str(tmp_path), {"traefik", "ingress"})}
    assert sorted(found) == ["a.yaml", "b.json", "c.yml", "ingress/e.yaml", "sub/d.yaml",
                             "traefik.yaml"]
    assert found["a.yaml"].skipped and not found["b.json"].skipped
    assert found["traefik.yaml"].disabled and found["ingress/e.yaml"].disabled
    assert not found["sub/d.yaml"].disabled
    assert manifests.scan(str(tmp_path / "absent")) == []


def test_addon_name_is_the_file_name_up_to_the_first_dot(tmp_path):
    (tmp_path / "local-storage.v2.yaml").write_text("")
    (file,) = manifests.scan(str(tmp_path))
    assert file.addon == "local-storage"
    # disabling matches the name without the last extension only (k3s's rule)
    assert manifests.is_disabled("local-storage.v2.yaml", {"local-storage.v2"})
    assert not manifests.is_disabled("local-storage.v2.yaml", {"local-storage"})


def test_parse_documents_lists_and_errors():
    objects = manifests.parse(
        b"# comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
        b"apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, "
        b"metadata: {name: s}}\n---\n", "x.yaml")
    assert [o["metadata"]["name"] for o in objects] == ["a", "s"]
    assert manifests.parse(b'{"apiVersion": "v1", "kind": "Namespace", '
                           b'"metadata": {"name": "n"}}', "n.json")[0]["kind"] == "Namespace"
    with pytest.raises(manifests.ManifestError, match="Object 'Kind' is missing"):
        manifests.parse(b"apiVersion: v1\nmetadata: {name: a}\n", "x.yaml")
    with pytest.raises(manifests.ManifestError, match="has no metadata.name"):
        manifests.parse(b"apiVersion: v1\nkind: ConfigMap\n", "x.yaml")
    with pytest.raises(manifests.ManifestError, match="not an object"):
        manifests.parse(b"- 1\n", "x.yaml")
    # a YAML error names the place, never the text (a Secret's value may be on that line)
    with pytest.raises(manifests.ManifestError) as caught:
        manifests.parse(b"kind: Secret\nstringData: {token: hunter2\n", "x.yaml")
    assert "hunter2" not in str(caught.value) and "line" in str(caught.value)


def test_stage_writes_unless_disabled_or_skipped(tmp_path):
    directory = str(tmp_path / "manifests")
    assert manifests.stage(directory, "ingress", "kind: A\n")
    assert not manifests.stage(directory, "ingress", "kind: A\n")  # unchanged: not touched
    assert manifests.stage(directory, "ingress", "kind: B\n")
    assert (tmp_path / "manifests" / "ingress.yaml").read_text() == "kind: B\n"
    assert not manifests.stage(directory, "metrics-server", "x", disables={"metrics-server"})
    (tmp_path / "manifests" / "ingress.yaml.skip").write_text("")
    assert not manifests.stage(directory, "ingress", "kind: C\n")
    assert sorted(os.listdir(directory)) == ["ingress.yaml", "ingress.yaml.skip"]
