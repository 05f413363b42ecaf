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

import os
import shutil
import subprocess
import time

import pytest

from tests.e2e.conftest import find_kubectl, free_port
from tools import debianroots
from tools.debianroots import chroot_of

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("debootstrap")
                       or not shutil.which("curl"),
                       reason="needs root, debootstrap and curl (tests/run.sh)"),
]


def emulation():
    """Foreign binaries through qemu-user-static (skipped where it is not installed)."""
    if not shutil.which("update-binfmts") or not os.path.exists("/usr/bin/qemu-aarch64-static"):
        pytest.skip("needs qemu-user-static and binfmt-support (tests/run.sh)")
    return debianroots.binfmt()


def install_in(root: str, url: str, args: str, **env: str) -> str:
    done = debianroots.install(url, args, {"INSTALL_K8PY_ARTIFACT_URL": url, **env},
                             prefix=["chroot", root])
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def kubectl(root: str, *args: str) -> subprocess.CompletedProcess:
    return debianroots.kubectl_in(root, find_kubectl(), *args)


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
        with debianroots.server_in(root, free_port(), find_kubectl(), timeout=60) as seconds:
            print(f"x86_64: server start to serving {seconds:.1f} s")
            assert kubectl(root, "create", "configmap", "fresh", "--from-literal=a=b"
                           ).returncode == 0


def test_arm64_artifact_installs_and_serves_under_emulation(artifacts, tmp_path):
    with emulation(), chroot_of("arm64", str(tmp_path)) as root:
        machine = subprocess.run(["chroot", root, "uname", "-m"], capture_output=True,
                                 text=True).stdout.strip()
        assert machine == "aarch64"
        out = install_in(root, artifacts, "server --disable-agent",
                         INSTALL_K8PY_SKIP_PACKAGES="true")
        assert "on aarch64" in out
        with debianroots.server_in(root, free_port(), find_kubectl(), timeout=240) as seconds:
            print(f"arm64 (emulated): server start to serving {seconds:.1f} s")
            version = kubectl(root, "get", "--raw", "/version")
            assert "linux/arm64" in version.stdout, version.stdout
            assert kubectl(root, "create", "configmap", "on-arm", "--from-literal=a=b"
                           ).returncode == 0


def test_armhf_artifact_installs_with_debians_compiled_packages(artifacts, tmp_path):
    with emulation(), chroot_of("armhf", str(tmp_path)) as root:
        out = install_in(root, artifacts, "server --disable-agent",
                         INSTALL_K8PY_SKIP_PACKAGES="true")
        assert "on armv7l" in out
        version = subprocess.run(["chroot", root, "/usr/local/bin/k8py", "--version"],
                                 capture_output=True, text=True, timeout=300)
        assert version.returncode == 0 and "k8py version" in version.stdout, version.stderr
