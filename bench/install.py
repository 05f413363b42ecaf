"""Installer benchmark. Needs root, debootstrap, curl, and for arm64 qemu-user-static.

    .venv/bin/python bench/install.py [--no-arm64]

Figures:
1. artifact size per architecture (tools/build_artifacts.py, Python 3.11 wheels);
2. install.sh in a fresh x86_64 Debian root (debootstrap minbase, chrooted; piped from
   loopback as users run it), with the system packages not yet downloaded, and again in
   another fresh root whose apt cache already holds them;
3. `k8py server --disable-agent` from start to serving (`kubectl get --raw /version`), on
   x86_64 and in an arm64 root under qemu-user emulation.
Roots come from tools/debianroots (cached as tarballs after the first run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools import debianroots  # noqa: E402

KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"


def timed_install(root: str, url: str, **env: str) -> float:
    started = time.monotonic()
    done = debianroots.install(url, "server --disable-agent",
                               {"INSTALL_K8PY_ARTIFACT_URL": url, **env},
                               prefix=["chroot", root])
    if done.returncode != 0:
        raise SystemExit(f"install.sh failed: {done.stderr.strip()}")
    return time.monotonic() - started


def start_to_serving(root: str, port: int) -> float:
    kubectl = KUBECTL if os.path.exists(KUBECTL) else shutil.which("kubectl.1.32") or "kubectl"
    with debianroots.server_in(root, port, kubectl, timeout=300) as seconds:
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-arm64", action="store_true", help="skip the emulated server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="k8py-bench-install-") as work:
        dist = os.path.join(work, "dist")
        debianroots.build_artifacts(dist)
        print("artifact size:")
        for arch in ("x86_64", "aarch64", "armv7l"):
            for version in os.listdir(dist):
                path = os.path.join(dist, version, f"k8py-linux-{arch}.tar.gz")
                if version != "latest" and os.path.exists(path):
                    print(f"  {arch:<8} {os.path.getsize(path) / 2**20:6.1f} MB")
        with debianroots.served(dist) as url:
            with debianroots.chroot_of("amd64", os.path.join(work, "cold")) as root:
                cold = timed_install(root, url)
                archives = os.path.join(work, "archives")
                shutil.copytree(os.path.join(root, "var/cache/apt/archives"), archives)
                serving = start_to_serving(root, 16443)
            with debianroots.chroot_of("amd64", os.path.join(work, "warm")) as root:
                shutil.copytree(archives, os.path.join(root, "var/cache/apt/archives"),
                                dirs_exist_ok=True)
                warm = timed_install(root, url)
            print(f"install.sh in a fresh x86_64 root: {cold:5.1f} s with the packages "
                  f"downloaded, {warm:5.1f} s with them in apt's cache")
            print(f"server start to serving: x86_64 {serving:5.1f} s", end="")
            if not args.no_arm64:
                with debianroots.binfmt(), \
                        debianroots.chroot_of("arm64", os.path.join(work, "arm64")) as root:
                    timed_install(root, url, INSTALL_K8PY_SKIP_PACKAGES="true")
                    print(f", arm64 under emulation {start_to_serving(root, 16444):5.1f} s",
                          end="")
            print()


if __name__ == "__main__":
    main()
