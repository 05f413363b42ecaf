"""Installing k8py as users do, for the installer's tests and benchmark: release artifacts
built by tools/build_artifacts.py and served on loopback, `curl -sfL <url>/install.sh | sh -s
- ...` (on this host or chrooted), the command and environment a written unit would start
(these hosts run no systemd), and fresh minimal Debian roots made with debootstrap for any
architecture (emulated ones through qemu-user-static and binfmt_misc).

Roots are kept as tarballs in CACHE (made on first use: about 20 s for x86_64, two minutes
or so for an emulated one); each user unpacks its own copy (`chroot_of`)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CACHE = "/var/cache/k8py-tests/roots"
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# what each root starts with: for the emulated ones, what the installer would otherwise
# install through apt under emulation (slow), and armhf's compiled Python packages
INCLUDE = {
    "amd64": "curl,ca-certificates",
    "arm64": "python3,python3-venv,ca-certificates,curl,nftables",
    # ply: debootstrap skips virtual packages
    "armhf": "python3,python3-venv,ca-certificates,curl,nftables,python3-yaml,"
             "python3-zstandard,python3-cffi,python3-nacl,python3-ply",
}


def build_artifacts(out: str, arches: str = "x86_64,aarch64,armv7l",
                    pythons: str = "3.11") -> None:
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_artifacts.py"),
                           "--out", out, "--arch", arches, "--python", pythons],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or done.stdout.strip())


@contextlib.contextmanager
def served(directory: str, host: str = "127.0.0.1") -> Iterator[str]:
    """`directory` over HTTP on loopback; its URL."""
    handler = functools.partial(_QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def install(url: str, args: str, env: dict[str, str], prefix: list[str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """`curl -sfL <url>/install.sh | sh -s - <args>` with `env` added (as root)."""
    command = f"curl -sfL {url}/install.sh | sh -s - {args}"
    return subprocess.run([*(prefix or []), "sh", "-c", command], capture_output=True,
                          text=True, timeout=timeout,
                          env={"PATH": os.environ["PATH"], "HOME": "/root", **env})


def unit_command(unit_path: str) -> tuple[list[str], dict[str, str]]:
    """The ExecStart command of a unit the installer wrote, and the environment of its
    EnvironmentFile."""
    with open(unit_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    command = next(shlex.split(line.split("=", 1)[1]) for line in lines
                   if line.startswith("ExecStart="))
    env: dict[str, str] = {}
    for line in lines:
        if line.startswith("EnvironmentFile="):
            path = line.split("=", 1)[1].lstrip("-")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    env.update(entry.split("=", 1) for entry in f.read().splitlines()
                               if "=" in entry)
    return command, env


@contextlib.contextmanager
def binfmt() -> Iterator[None]:
    """Foreign binaries run through qemu-user-static for as long as this lasts."""
    if not shutil.which("update-binfmts") or not os.path.exists("/usr/bin/qemu-aarch64-static"):
        raise RuntimeError("needs qemu-user-static and binfmt-support (tests/run.sh)")
    mounted = False
    if not os.path.exists("/proc/sys/fs/binfmt_misc/status"):
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc",
                        "/proc/sys/fs/binfmt_misc"], check=True)
        mounted = True
    subprocess.run(["update-binfmts", "--enable"], capture_output=True)
    try:
        yield
    finally:
        if mounted:
            subprocess.run(["umount", "/proc/sys/fs/binfmt_misc"], check=False)


def cached_root(arch: str) -> str:
    """A tarball of a fresh minimal Debian root for `arch` (made once)."""
    os.makedirs(CACHE, exist_ok=True)
    # named by what it holds, so a changed INCLUDE makes a new one
    tag = hashlib.sha256(INCLUDE[arch].encode()).hexdigest()[:8]
    tarball = os.path.join(CACHE, f"{SUITE}-{arch}-{tag}.tar")
    if os.path.exists(tarball):
        return tarball
    building = tarball[:-len(".tar")] + ".building"
    shutil.rmtree(building, ignore_errors=True)
    started = time.monotonic()
    done = subprocess.run(["debootstrap", f"--arch={arch}", "--variant=minbase",
                           f"--include={INCLUDE[arch]}", SUITE, building, MIRROR],
                          capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"debootstrap {arch} failed: {done.stderr.strip()[-500:]}")
    print(f"debootstrap {arch}: {time.monotonic() - started:.0f} s")
    with tarfile.open(tarball + ".part", "w") as tar:
        tar.add(building, arcname=".")
    os.rename(tarball + ".part", tarball)
    shutil.rmtree(building, ignore_errors=True)
    return tarball


@contextlib.contextmanager
def chroot_of(arch: str, where: str) -> Iterator[str]:
    """An unpacked copy of the root with /proc, /sys and /dev, unmounted afterwards."""
    root = os.path.join(where, arch)
    os.makedirs(root)
    with tarfile.open(cached_root(arch)) as tar:
        tar.extractall(root, filter="fully_trusted")
    shutil.copy("/etc/resolv.conf", os.path.join(root, "etc", "resolv.conf"))
    mounts = [(["-t", "proc", "proc"], "proc"), (["-t", "sysfs", "sysfs"], "sys"),
              (["--bind", "/dev"], "dev")]
    done = []
    try:
        for args, target in mounts:
            subprocess.run(["mount", *args, os.path.join(root, target)], check=True)
            done.append(os.path.join(root, target))
        yield root
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(root, ignore_errors=True)


def kubectl_in(root: str, kubectl: str, *args: str) -> subprocess.CompletedProcess:
    """`kubectl` against the server installed in `root`, with its admin kubeconfig."""
    return subprocess.run([kubectl, "--kubeconfig",
                           os.path.join(root, "etc", "k8py", "k8py.yaml"), "--cache-dir",
                           os.path.join(root, "tmp", "kubectl-cache"), *args],
                          capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def server_in(root: str, port: int, kubectl: str, timeout: float) -> Iterator[float]:
    """`k8py server --disable-agent` installed in `root`, run there on loopback; the
    seconds from its start until it answered `kubectl get --raw /version`. Stopped after."""
    kubeconfig = os.path.join(root, "etc", "k8py", "k8py.yaml")
    if os.path.exists(kubeconfig):
        os.remove(kubeconfig)  # wait for the one this server writes
    started = time.monotonic()
    server = subprocess.Popen(
        ["chroot", root, "/usr/local/bin/k8py", "server", "--disable-agent",
         "--bind-address", "127.0.0.1", "--https-listen-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"})
    try:
        while not (os.path.exists(kubeconfig) and
                   kubectl_in(root, kubectl, "get", "--raw", "/version").returncode == 0):
            if server.poll() is not None:
                raise RuntimeError(f"the server in {root} exited ({server.returncode})")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the server in {root} did not serve in {timeout:.0f} s")
            time.sleep(0.2)
        yield time.monotonic() - started
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
