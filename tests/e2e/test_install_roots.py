"""The installer in fresh Debian roots made with debootstrap: x86_64 (chrooted: the packages
installed for real through apt, the files checked, the installed k8py serving), arm64 under
qemu-user emulation (the arm64 artifact installed, `k8py server --disable-agent` answering
`kubectl get --raw /version` and `kubectl create configmap`) and armhf (the armv7l artifact
installed with Debian's pyyaml, zstandard and cffi; `k8py --version` answers). Start is
skipped: a root has no init (the installer says so).

Roots are kept as tarballs in /var/cache/k8py-tests/roots (made on first use: about 20 s for
x86_64, a few minutes for an emulated one); each test unpacks its own copy. Emulation needs
binfmt_misc: mounted (and `update-binfmts --enable`d) if it is not, and unmounted again. qemu
-user runs no netfilter netlink, so the arm tests run the server only, never the agent."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator

import pytest

from tests.conftest import stop_process, wait_for
from tests.e2e import installer
from tests.e2e.conftest import find_kubectl, free_port

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("debootstrap")
                       or not shutil.which("curl"),
                       reason="needs root, debootstrap and curl (tests/run.sh)"),
]

CACHE = "/var/cache/k8py-tests/roots"
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# what each root starts with: for the emulated ones, what the installer would otherwise
# install through apt under emulation (slow), and armhf's compiled Python packages
INCLUDE = {
    "amd64": "curl,ca-certificates",
    "arm64": "python3,python3-venv,ca-certificates,curl,nftables",
    "armhf": "python3,python3-venv,ca-certificates,curl,nftables,python3-yaml,"
             "python3-zstandard,python3-cffi-backend",
}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dist"))
    installer.build_artifacts(out)
    with installer.served(out) as url:
        yield url


@contextlib.contextmanager
def binfmt() -> Iterator[None]:
    """Foreign binaries run through qemu-user-static for as long as this lasts."""
    if not shutil.which("update-binfmts") or not os.path.exists("/usr/bin/qemu-aarch64-static"):
        pytest.skip("needs qemu-user-static and binfmt-support (tests/run.sh)")
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
    tarball = os.path.join(CACHE, f"{SUITE}-{arch}.tar")
    if os.path.exists(tarball):
        return tarball
    building = os.path.join(CACHE, f"{SUITE}-{arch}.building")
    shutil.rmtree(building, ignore_errors=True)
    started = time.monotonic()
    done = subprocess.run(["debootstrap", f"--arch={arch}", "--variant=minbase",
                           f"--include={INCLUDE[arch]}", SUITE, building, MIRROR],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
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


def install_in(root: str, url: str, args: str, **env: str) -> str:
    done = installer.install(url, args, {"INSTALL_K8PY_ARTIFACT_URL": url, **env},
                             prefix=["chroot", root])
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def serving(root: str, port: int, timeout: float) -> subprocess.Popen:
    """`k8py server --disable-agent` inside the root, on loopback; once it answers."""
    server = subprocess.Popen(
        ["chroot", root, "/usr/local/bin/k8py", "server", "--disable-agent",
         "--bind-address", "127.0.0.1", "--https-listen-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"})
    kubeconfig = os.path.join(root, "etc", "k8py", "k8py.yaml")
    try:
        wait_for(lambda: os.path.exists(kubeconfig) and kubectl(
            root, "get", "--raw", "/version").returncode == 0, timeout=timeout, interval=1,
            what="the installed server answering")
    except BaseException:
        stop_process(server)
        raise
    return server


def kubectl(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([find_kubectl(), "--kubeconfig",
                           os.path.join(root, "etc", "k8py", "k8py.yaml"), "--cache-dir",
                           os.path.join(root, "tmp", "kubectl-cache"), *args],
                          capture_output=True, text=True, timeout=60)


def test_x86_64_fresh_root_gets_packages_files_and_a_serving_k8py(artifacts, tmp_path):
    with chroot_of("amd64", str(tmp_path)) as root:
        started = time.monotonic()
        out = install_in(root, artifacts, "server --disable-agent",
                         K8PY_NODE_NAME="fresh", K8PY_TOKEN="secret-token")
        print(f"install.sh in a fresh x86_64 root: {time.monotonic() - started:.1f} s")
        assert "no systemd or openrc" in out
        for package in ("containerd", "runc", "containernetworking-plugins", "nftables",
                        "busybox-static", "python3-venv"):
            status = subprocess.run(["chroot", root, "dpkg-query", "-W", "-f=${Status}",
                                     package], capture_output=True, text=True).stdout
            assert "install ok installed" in status, package
        unit = os.path.join(root, "etc/systemd/system/k8py.service")
        with open(unit) as f:
            text = f.read()
        assert "Type=notify" in text and "ExecStart=/usr/local/bin/k8py server '--disable-agent'" \
            in text
        env_file = unit + ".env"
        assert os.stat(env_file).st_mode & 0o777 == 0o600
        with open(env_file) as f:
            assert f.read() == "K8PY_NODE_NAME=fresh\nK8PY_TOKEN=secret-token\n"
        for script in ("k8py-killall.sh", "k8py-uninstall.sh"):
            assert os.access(os.path.join(root, "usr/local/bin", script), os.X_OK)
        # idempotent: the same again changes nothing
        assert "is installed already" in install_in(root, artifacts, "server --disable-agent",
                                                    K8PY_NODE_NAME="fresh",
                                                    K8PY_TOKEN="secret-token")
        started = time.monotonic()
        server = serving(root, free_port(), timeout=60)
        try:
            print(f"x86_64: server start to serving {time.monotonic() - started:.1f} s")
            assert kubectl(root, "create", "configmap", "fresh", "--from-literal=a=b"
                           ).returncode == 0
        finally:
            stop_process(server)


def test_arm64_artifact_installs_and_serves_under_emulation(artifacts, tmp_path):
    with binfmt(), chroot_of("arm64", str(tmp_path)) as root:
        machine = subprocess.run(["chroot", root, "uname", "-m"], capture_output=True,
                                 text=True).stdout.strip()
        assert machine == "aarch64"
        out = install_in(root, artifacts, "server --disable-agent",
                         INSTALL_K8PY_SKIP_PACKAGES="true")
        assert "on aarch64" in out
        started = time.monotonic()
        server = serving(root, free_port(), timeout=240)
        try:
            print(f"arm64 (emulated): server start to serving "
                  f"{time.monotonic() - started:.1f} s")
            version = kubectl(root, "get", "--raw", "/version")
            assert "linux/arm64" in version.stdout, version.stdout
            assert kubectl(root, "create", "configmap", "on-arm", "--from-literal=a=b"
                           ).returncode == 0
        finally:
            stop_process(server, timeout=60)


def test_armhf_artifact_installs_with_debians_compiled_packages(artifacts, tmp_path):
    with binfmt(), chroot_of("armhf", str(tmp_path)) as root:
        out = install_in(root, artifacts, "server --disable-agent",
                         INSTALL_K8PY_SKIP_PACKAGES="true")
        assert "on armv7l" in out
        version = subprocess.run(["chroot", root, "/usr/local/bin/k8py", "--version"],
                                 capture_output=True, text=True, timeout=300)
        assert version.returncode == 0 and "k8py version" in version.stdout, version.stderr
