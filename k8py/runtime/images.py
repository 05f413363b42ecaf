"""Images without a registry: building small images from the host's busybox, and importing
image archives into containerd.

Building (pure Python: tarfile, json, hashlib, gzip): an image is one gzipped layer, a config
and a manifest, written as an OCI image layout in a tar (`oci-layout`, `index.json`,
`blobs/sha256/<hex>`). Output is deterministic (fixed mtimes, owners, order), so a rebuild
gives the same digests. Two images, both from the static `/bin/busybox`:
- `k8py.local/pause:3.10` (`PAUSE_IMAGE`, containerd's `sandbox_image`): busybox running
  `sleep` for 68 years. Nothing needs to be reaped (pods do not share a PID namespace by
  default) and containerd stops sandboxes with SIGKILL, so `sleep` ignoring SIGTERM as PID 1
  costs nothing.
- `k8py.local/busybox:latest` (`BUSYBOX_IMAGE`): every applet as a `/bin` symlink (`sh`,
  `sleep`, `cat`, `httpd`, `wget`, `nc`, ...), `/sbin`, `/usr/bin`, `/usr/sbin` pointing at
  `/bin`, `/etc/passwd` and `/etc/group` with root and nobody, `/tmp` (1777), `/root`.

Importing: an archive is an OCI layout or a docker archive (`docker save`), plain, gzip or
zstd (told by its magic bytes, not its name). It is decompressed in Python and relayed, member
by member, into `ctr -a <socket> -n k8s.io images import -` (the client that ships with
containerd; it also unpacks into the overlayfs snapshotter). The same pass reads the image
names (an OCI index's `io.containerd.image.name` annotation, or a full reference in its
`org.opencontainers.image.ref.name`, which is then written as `io.containerd.image.name` so
containerd keeps the name; a docker archive's `RepoTags`, normalized as docker does:
`busybox` is `docker.io/library/busybox:latest`). Failures raise `ImageError` with one line.
Listing and removing go through the CRI (`CriClient.list_images`/`remove_image`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from typing import IO, BinaryIO

from k8py.runtime.cri import CriClient

log = logging.getLogger(__name__)

PAUSE_IMAGE = "k8py.local/pause:3.10"
BUSYBOX_IMAGE = "k8py.local/busybox:latest"
HOST_BUSYBOX = "/bin/busybox"
NAMESPACE = "k8s.io"  # containerd namespace the CRI plugin uses

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = "1970-01-01T00:00:00Z"

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ImageError(Exception):
    """An image could not be built or imported; the message is one line for the operator."""


# --- references ---------------------------------------------------------------------------

def normalize_ref(ref: str) -> str:
    """A reference as containerd names it: `busybox` -> `docker.io/library/busybox:latest`,
    `k8py.local/pause:3.10` unchanged."""
    name, at, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if not slash:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    elif first == "docker.io" and "/" not in rest:
        name = f"docker.io/library/{rest}"
    if not at and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if at else name


def _is_full_ref(value: str) -> bool:
    """An OCI ref.name that names an image (`docker.io/x/y:1`, `y:1`), not just a tag."""
    return "/" in value or ":" in value


# --- building -----------------------------------------------------------------------------

def oci_platform(machine: str | None = None) -> dict:
    """The OCI platform of this host (`uname -m` mapped to GOARCH names)."""
    machine = (machine or platform.machine()).lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "i686": "386", "i386": "386"}.get(machine)
    if arch:
        return {"architecture": arch, "os": "linux"}
    if machine.startswith("armv"):
        return {"architecture": "arm", "os": "linux", "variant": f"v{machine[4]}"}
    return {"architecture": machine, "os": "linux"}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file system entry of a layer: a directory, a regular file or a symlink."""

    path: str  # relative, no leading slash
    kind: str  # "dir" | "file" | "symlink"
    mode: int = 0o755
    data: bytes = b""
    target: str = ""  # symlinks


def _layer_tar(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(entry.path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            info.mode = entry.mode
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
                tar.addfile(info)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def oci_layout(name: str, entries: list[Entry], image_config: dict,
               plat: dict | None = None) -> bytes:
    """An OCI image layout tarball of a one-layer image called `name` (a full reference)."""
    plat = plat or oci_platform()
    layer_tar = _layer_tar(entries)
    layer = gzip.compress(layer_tar, compresslevel=6, mtime=0)
    config = _json({
        **plat,
        "created": EPOCH,
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
        "history": [{"created": EPOCH, "created_by": "k8py images build"}],
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": _digest(layer),
                    "size": len(layer)}],
    })
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = _json({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST, "digest": _digest(manifest), "size": len(manifest),
            "platform": plat,
            "annotations": {ANNOTATION_IMAGE_NAME: name, ANNOTATION_REF_NAME: tag},
        }],
    })
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(path: str, data: bytes | None) -> None:
            info = tarfile.TarInfo(path)
            info.mtime, info.uname, info.gname = 0, "root", "root"
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))

        add("oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        add("blobs", None)
        add("blobs/sha256", None)
        for blob in (layer, config, manifest):
            add("blobs/sha256/" + _digest(blob)[7:], blob)
        add("index.json", index)
    return out.getvalue()


def _read_busybox(busybox: str) -> bytes:
    try:
        with open(busybox, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ImageError(f"cannot read {busybox} ({exc.strerror}): install busybox-static"
                         ) from None


def _base_entries(busybox_data: bytes) -> list[Entry]:
    return [Entry("bin", "dir"), Entry("bin/busybox", "file", 0o755, busybox_data),
            Entry("dev", "dir"), Entry("etc", "dir"), Entry("proc", "dir"),
            Entry("sys", "dir"), Entry("tmp", "dir", 0o1777)]


def build_pause_image(busybox: str = HOST_BUSYBOX, plat: dict | None = None) -> bytes:
    entries = _base_entries(_read_busybox(busybox))
    return oci_layout(PAUSE_IMAGE, entries, {
        "Entrypoint": ["/bin/busybox", "sleep", "2147483647"],
        "Env": [DEFAULT_PATH], "WorkingDir": "/",
    }, plat)


def busybox_applets(busybox: str = HOST_BUSYBOX) -> list[str]:
    """The applets the busybox binary has (`busybox --list`)."""
    try:
        out = subprocess.run([busybox, "--list"], capture_output=True, check=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"cannot list the applets of {busybox}: {exc}") from None
    return sorted({name for name in out.decode().split() if name and "/" not in name})


PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nnobody:x:65534:\n"


def build_busybox_image(busybox: str = HOST_BUSYBOX, plat: dict | None = None,
                        name: str = BUSYBOX_IMAGE) -> bytes:
    entries = _base_entries(_read_busybox(busybox))
    entries += [Entry(f"bin/{applet}", "symlink", target="busybox")
                for applet in busybox_applets(busybox) if applet != "busybox"]
    entries += [
        Entry("etc/passwd", "file", 0o644, PASSWD.encode()),
        Entry("etc/group", "file", 0o644, GROUP.encode()),
        Entry("root", "dir", 0o700), Entry("home", "dir"), Entry("var", "dir"),
        Entry("var/www", "dir"), Entry("usr", "dir"),
        Entry("sbin", "symlink", target="bin"),
        Entry("usr/bin", "symlink", target="../bin"),
        Entry("usr/sbin", "symlink", target="../bin"),
    ]
    return oci_layout(name, entries, {"Cmd": ["sh"], "Env": [DEFAULT_PATH],
                                      "WorkingDir": "/"}, plat)


# --- reading archives ---------------------------------------------------------------------

@dataclasses.dataclass
class Archive:
    format: str = ""  # "oci" | "docker"
    refs: list[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def open_archive(path: str) -> Iterator[BinaryIO]:
    """The archive at path, decompressed (gzip and zstd told by their magic bytes)."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise ImageError(f"{path}: {exc.strerror}") from None
    with raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic.startswith(GZIP_MAGIC):
            with gzip.GzipFile(fileobj=raw) as stream:
                yield stream  # type: ignore[misc]
        elif magic == ZSTD_MAGIC:
            import zstandard  # only when an archive needs it

            with zstandard.ZstdDecompressor().stream_reader(raw) as stream:
                yield stream  # type: ignore[misc]
        else:
            yield raw


def _member_name(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name


def _oci_index(data: bytes, archive: Archive) -> bytes:
    """Record an OCI index's image names; give full `ref.name`s containerd's name annotation
    so the import keeps them. Returns the (possibly rewritten) index."""
    index = json.loads(data)
    archive.format = archive.format or "oci"
    changed = False
    for descriptor in index.get("manifests") or []:
        annotations = descriptor.get("annotations") or {}
        name = annotations.get(ANNOTATION_IMAGE_NAME)
        ref_name = annotations.get(ANNOTATION_REF_NAME, "")
        if not name and _is_full_ref(ref_name):
            name = normalize_ref(ref_name)
            descriptor["annotations"] = {**annotations, ANNOTATION_IMAGE_NAME: name}
            changed = True
        if name:
            archive.refs.append(name)
    return json.dumps(index).encode() if changed else data


def relay_archive(src: IO[bytes], dst: IO[bytes] | None) -> Archive:
    """Read an image archive (a decompressed tar stream) member by member, copying it to
    dst (if any) with the OCI index adjusted; return what it holds."""
    archive = Archive()
    seen_index = False
    try:
        with contextlib.ExitStack() as stack:
            tin = stack.enter_context(tarfile.open(fileobj=src, mode="r|"))
            tout = (stack.enter_context(tarfile.open(fileobj=dst, mode="w|",
                                                     format=tarfile.PAX_FORMAT))
                    if dst is not None else None)
            for member in tin:
                name = _member_name(member)
                if member.isfile() and name in ("index.json", "manifest.json"):
                    data = tin.extractfile(member).read()  # type: ignore[union-attr]
                    if name == "index.json":
                        seen_index = True
                        data = _oci_index(data, archive)
                    else:
                        archive.format = "docker"
                        for image in json.loads(data):
                            archive.refs += [normalize_ref(t) for t in image.get("RepoTags")
                                             or []]
                    member.size = len(data)
                    if tout is not None:
                        tout.addfile(member, io.BytesIO(data))
                elif tout is not None:
                    tout.addfile(member, tin.extractfile(member) if member.isfile() else None)
    except BrokenPipeError:
        raise  # the reader (ctr) went away: the caller reports its words
    except (tarfile.TarError, EOFError) as exc:
        raise ImageError(f"not a readable tar archive ({exc})") from None
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ImageError(f"damaged image archive ({exc})") from None
    except Exception as exc:  # gzip's OSErrors, zstandard.ZstdError
        raise ImageError(f"cannot read the archive ({exc})") from None
    if not archive.format or (archive.format == "oci" and not seen_index):
        raise ImageError("not an image archive (no index.json or manifest.json)")
    return archive


def read_archive(path: str) -> Archive:
    """What an archive file holds (format and image names), reading it once."""
    with open_archive(path) as stream:
        return relay_archive(stream, None)


# --- importing ------------------------------------------------------------------------------

def _ctr() -> str:
    return shutil.which("ctr") or "/usr/bin/ctr"


def import_archive_blocking(path: str, socket_path: str, *, namespace: str = NAMESPACE,
                            timeout: float = 600.0) -> list[str]:
    """Import the archive at path into containerd; the names imported. Blocking: call it
    in a thread (`import_archive`)."""
    if not os.path.exists(socket_path):
        raise ImageError(f"containerd is not running (no socket at {socket_path})")
    with open_archive(path) as stream, tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(
                [_ctr(), "-a", socket_path, "-n", namespace, "images", "import",
                 "--snapshotter", "overlayfs", "-"],
                stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise ImageError(f"cannot run ctr ({exc.strerror})") from None
        archive: Archive | None = None
        error: ImageError | None = None
        try:
            archive = relay_archive(stream, proc.stdin)
        except ImageError as exc:
            error = exc
        except BrokenPipeError:
            pass  # ctr gave up: its output says why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()  # type: ignore[union-attr]
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ImageError(f"ctr import did not finish within {timeout:.0f}s") from None
        if error is not None:
            raise error
        if code != 0 or archive is None:
            output.seek(0)
            lines = [line for line in output.read().decode(errors="replace").splitlines()
                     if line.strip()]
            raise ImageError("ctr import failed: " + (lines[-1] if lines else f"exit {code}"))
    return archive.refs


async def import_archive(path: str, socket_path: str, **options) -> list[str]:
    return await asyncio.to_thread(import_archive_blocking, path, socket_path, **options)


async def import_bytes(data: bytes, socket_path: str) -> list[str]:
    """Import an archive held in memory (a built image) through a temp file."""
    def run() -> list[str]:
        with tempfile.NamedTemporaryFile(suffix=".tar") as f:
            f.write(data)
            f.flush()
            return import_archive_blocking(f.name, socket_path)
    return await asyncio.to_thread(run)


async def ensure_pause_image(cri: CriClient, socket_path: str,
                             busybox: str = HOST_BUSYBOX) -> bool:
    """Build and import the pause image if the runtime lacks it; True if it imported."""
    if await cri.image_status(PAUSE_IMAGE) is not None:
        return False
    data = await asyncio.to_thread(build_pause_image, busybox)
    await import_bytes(data, socket_path)
    log.info("imported %s (built from %s)", PAUSE_IMAGE, busybox)
    return True
