"""Locally built images are valid OCI layouts (every blob's digest and size as its
descriptors say, the config's diff_ids matching the layers); archives are read in every
format and compression we accept; references are named as containerd names them."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest
import zstandard

from k8py.runtime import images
from k8py.runtime.images import (BUSYBOX_IMAGE, PAUSE_IMAGE, ImageError, build_busybox_image,
                                 build_pause_image, normalize_ref, read_archive)

needs_busybox = pytest.mark.skipif(not os.path.exists("/bin/busybox"),
                                   reason="needs busybox-static")


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def blob(files: dict[str, bytes], descriptor: dict) -> bytes:
    algorithm, hexdigest = descriptor["digest"].split(":")
    data = files[f"blobs/{algorithm}/{hexdigest}"]
    assert hashlib.sha256(data).hexdigest() == hexdigest
    assert len(data) == descriptor["size"]
    return data


def check_layout(data: bytes, name: str) -> tuple[dict, tarfile.TarFile]:
    files = members(data)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["schemaVersion"] == 2
    (descriptor,) = index["manifests"]
    assert descriptor["annotations"]["io.containerd.image.name"] == name
    assert descriptor["platform"]["os"] == "linux"
    manifest = json.loads(blob(files, descriptor))
    assert manifest["mediaType"] == descriptor["mediaType"]
    config = json.loads(blob(files, manifest["config"]))
    (layer_descriptor,) = manifest["layers"]
    layer = gzip.decompress(blob(files, layer_descriptor))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["architecture"] == descriptor["platform"]["architecture"]
    return config, tarfile.open(fileobj=io.BytesIO(layer))


@needs_busybox
def test_pause_image_is_a_valid_oci_layout():
    config, layer = check_layout(build_pause_image(), PAUSE_IMAGE)
    assert config["config"]["Entrypoint"][:2] == ["/bin/busybox", "sleep"]
    busybox = layer.getmember("bin/busybox")
    assert busybox.mode == 0o755 and busybox.size == os.path.getsize("/bin/busybox")


@needs_busybox
def test_busybox_image_has_the_applets_and_users():
    config, layer = check_layout(build_busybox_image(), BUSYBOX_IMAGE)
    assert config["config"]["Cmd"] == ["sh"]
    names = set(layer.getnames())
    for applet in ("sh", "sleep", "cat", "httpd", "wget", "nc", "echo"):
        member = layer.getmember(f"bin/{applet}")
        assert member.issym() and member.linkname == "busybox"
    assert layer.getmember("tmp").mode == 0o1777
    passwd = layer.extractfile("etc/passwd").read().decode()
    assert passwd.startswith("root:x:0:0:") and "nobody:x:65534:65534:" in passwd
    assert {"sbin", "usr/bin", "etc/group", "root"} <= names


@needs_busybox
def test_builds_are_deterministic():
    assert build_pause_image() == build_pause_image()


def test_platforms():
    assert images.oci_platform("x86_64") == {"architecture": "amd64", "os": "linux"}
    assert images.oci_platform("aarch64") == {"architecture": "arm64", "os": "linux"}
    assert images.oci_platform("armv7l") == {"architecture": "arm", "os": "linux",
                                             "variant": "v7"}


def test_normalize_ref():
    assert normalize_ref("busybox") == "docker.io/library/busybox:latest"
    assert normalize_ref("nginx:1.27") == "docker.io/library/nginx:1.27"
    assert normalize_ref("me/app") == "docker.io/me/app:latest"
    assert normalize_ref("docker.io/busybox") == "docker.io/library/busybox:latest"
    assert normalize_ref("k8py.local/pause:3.10") == "k8py.local/pause:3.10"
    assert normalize_ref("localhost:5000/x") == "localhost:5000/x:latest"
    assert normalize_ref("quay.io/a/b@sha256:ab") == "quay.io/a/b@sha256:ab"


def tiny_oci(name: str = "k8py.local/tiny:1") -> bytes:
    entries = [images.Entry("hello", "file", 0o644, b"hi\n")]
    return images.oci_layout(name, entries, {"Cmd": ["/hello"]},
                             {"architecture": "amd64", "os": "linux"})


def docker_archive(tags: list[str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (("abc.json", b"{}"), ("layer/layer.tar", b"x" * 10),
                           ("manifest.json", json.dumps([{
                               "Config": "abc.json", "RepoTags": tags,
                               "Layers": ["layer/layer.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("compress", [
    lambda d: d, gzip.compress, lambda d: zstandard.ZstdCompressor().compress(d)],
    ids=["plain", "gzip", "zstd"])
def test_reads_oci_and_docker_archives_in_every_compression(tmp_path, compress):
    oci = tmp_path / "oci.tar.x"
    oci.write_bytes(compress(tiny_oci()))
    assert read_archive(str(oci)) == images.Archive("oci", ["k8py.local/tiny:1"])
    docker = tmp_path / "docker.tar.x"
    docker.write_bytes(compress(docker_archive(["busybox:1.36", "me/app"])))
    assert read_archive(str(docker)) == images.Archive(
        "docker", ["docker.io/library/busybox:1.36", "docker.io/me/app:latest"])


def test_relay_names_oci_images_that_only_have_a_full_ref_name():
    data = tiny_oci()
    files = members(data)
    index = json.loads(files["index.json"])
    index["manifests"][0]["annotations"] = {
        "org.opencontainers.image.ref.name": "quay.io/x/y:2"}
    rebuilt = io.BytesIO()
    with tarfile.open(fileobj=rebuilt, mode="w") as tar:
        for name, content in {**files, "index.json": json.dumps(index).encode()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    archive = images.relay_archive(io.BytesIO(rebuilt.getvalue()), out)
    assert archive.refs == ["quay.io/x/y:2"]
    relayed = members(out.getvalue())
    annotations = json.loads(relayed["index.json"])["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == "quay.io/x/y:2"
    assert {k: v for k, v in relayed.items() if k != "index.json"} == {
        k: v for k, v in files.items() if k != "index.json"}


@pytest.mark.parametrize("content,message", [
    (b"", "not a readable tar archive"),
    (b"this is not a tar archive at all" * 40, "not a readable tar archive"),
    (gzip.compress(b"garbage" * 100), "not a readable tar archive"),
    (b"\x28\xb5\x2f\xfd" + b"broken zstd", "cannot read the archive"),
])
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.tar"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        read_archive(str(path))
    assert "\n" not in str(info.value)


def test_a_tar_without_an_image_is_refused(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    path = tmp_path / "plain.tar"
    path.write_bytes(out.getvalue())
    with pytest.raises(ImageError, match="not an image archive"):
        read_archive(str(path))
    with pytest.raises(ImageError, match="No such file"):
        read_archive(str(tmp_path / "missing.tar"))
