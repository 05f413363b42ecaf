"""Build k8py's release artifacts: per architecture, a tarball of k8py and its dependencies as
wheels for that platform, and the tarball's sha256sum; beside them the installer.

    .venv/bin/python tools/build_artifacts.py [--out dist] [--arch x86_64,aarch64,armv7l]
                                              [--python 3.11,3.12,3.13]

Layout (what `install.sh` fetches from INSTALL_K8PY_ARTIFACT_URL):

    dist/install.sh
    dist/<version>/k8py-linux-<arch>.tar.gz     k8py/VERSION, k8py/wheels/*.whl,
                                                 k8py/debian-packages (see armv7l)
    dist/<version>/sha256sum-<arch>.txt
    dist/latest -> <version>

The installer makes a virtual environment with the host's python3 and installs k8py from
the wheels alone (`pip install --no-index`): nothing is fetched at install time, and what
was resolved here is what runs (the wheels pin the dependencies). Compiled dependencies
come for every Python in --python (Debian 12 and Raspberry Pi OS have 3.11, Ubuntu 24.04
3.12, Debian 13 3.13). The test extras are not included.

armv7l (armhf): PyPI has no armv7l wheels of pyyaml, zstandard, cffi and pynacl, and building
them under emulation takes many minutes (zstandard alone well over seven). The armv7l artifact
therefore leaves those out and names Debian's packages of them in
`k8py/debian-packages` (python3-yaml, python3-zstandard, python3-cffi, python3-nacl); the
installer installs those and makes the environment with `--system-site-packages`, so pip
takes them as installed. Debian's cffi is older than current cryptography wants, so the
armv7l artifact holds the newest cryptography that accepts it (`ARMV7L_PINS`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHES = ("x86_64", "aarch64", "armv7l")
PLATFORMS = {  # the wheel platform tags pip may take for each architecture
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
               "manylinux_2_34_x86_64", "linux_x86_64"],
    "aarch64": ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64",
                "manylinux_2_34_aarch64", "linux_aarch64"],
    "armv7l": ["manylinux2014_armv7l", "manylinux_2_17_armv7l", "manylinux_2_28_armv7l",
               "manylinux_2_31_armv7l", "manylinux_2_34_armv7l", "linux_armv7l"],
}
FROM_DEBIAN = {"pyyaml": "python3-yaml", "zstandard": "python3-zstandard",
               "cffi": "python3-cffi", "pynacl": "python3-nacl"}  # armv7l only: see above
ARMV7L_PINS = {"cryptography": "cryptography>=42,<46"}  # accepts Debian's cffi 1.15


class BuildError(Exception):
    pass


def pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True,
                          text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines()
                 if line.startswith("ERROR") or "No matching" in line] or \
            done.stderr.strip().splitlines()[-3:]
        raise BuildError(f"pip {args[0]} failed: {' / '.join(lines)}")


def project_version() -> str:
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        match = re.search(r'^version = "([^"]+)"', f.read(), re.M)
    if not match:
        raise BuildError("no version in pyproject.toml")
    return match.group(1)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download(target: str, requirements: list[str], arch: str, python: str,
             no_deps: bool = False) -> None:
    platforms = [arg for tag in PLATFORMS[arch] for arg in ("--platform", tag)]
    pip("download", "-q", "--only-binary=:all:", "--python-version", python,
        "--implementation", "cp", *platforms, *(["--no-deps"] if no_deps else []),
        "-d", target, *requirements)


def wheel_name(filename: str) -> str:
    return normalized(filename.split("-", 1)[0])


def build_arch(arch: str, pythons: list[str], k8py_wheel: str, version: str,
               out: str, work: str) -> str:
    """The artifact for one architecture; its path."""
    staging = os.path.join(work, arch, "k8py")
    wheels = os.path.join(staging, "wheels")
    os.makedirs(wheels)
    debian: list[str] = []
    for python in pythons:
        if arch != "armv7l":
            download(wheels, [k8py_wheel], arch, python)
            continue
        # the closure, as resolved for aarch64 (every wheel exists there), then each
        # pinned one for armv7l but those Debian provides
        closure = os.path.join(work, f"closure-{python}")
        if not os.path.isdir(closure):
            download(closure, [k8py_wheel, *ARMV7L_PINS.values()], "aarch64", python)
        pins = []
        for filename in sorted(os.listdir(closure)):
            name = wheel_name(filename)
            if name in FROM_DEBIAN or name == "k8py":
                continue
            pins.append(ARMV7L_PINS.get(name) or f"{name}=={filename.split('-')[1]}")
        download(wheels, pins, arch, python, no_deps=True)
        shutil.copy(k8py_wheel, wheels)
        debian = sorted(FROM_DEBIAN.values())
    with open(os.path.join(staging, "VERSION"), "w") as f:
        f.write(version + "\n")
    with open(os.path.join(staging, "debian-packages"), "w") as f:
        f.write("".join(f"{p}\n" for p in debian))
    target_dir = os.path.join(out, version)
    os.makedirs(target_dir, exist_ok=True)
    artifact = os.path.join(target_dir, f"k8py-linux-{arch}.tar.gz")
    with tarfile.open(artifact, "w:gz") as tar:
        tar.add(staging, arcname="k8py")
    with open(artifact, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(target_dir, f"sha256sum-{arch}.txt"), "w") as f:
        f.write(f"{digest}  k8py-linux-{arch}.tar.gz\n")
    return artifact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "dist"))
    parser.add_argument("--arch", default=",".join(ARCHES),
                        help="comma-separated, of " + ", ".join(ARCHES))
    parser.add_argument("--python", default="3.11,3.12,3.13",
                        help="Python versions to carry compiled wheels for")
    args = parser.parse_args()
    arches = [a for a in args.arch.split(",") if a]
    for arch in arches:
        if arch not in ARCHES:
            parser.error(f"unknown architecture {arch!r}")
    pythons = [p for p in args.python.split(",") if p]
    version = project_version()
    try:
        with tempfile.TemporaryDirectory(prefix="k8py-artifacts-") as work:
            pip("wheel", "-q", "--no-deps", "-w", os.path.join(work, "k8py"), ROOT)
            k8py_wheel = os.path.join(work, "k8py", os.listdir(os.path.join(work, "k8py"))[0])
            for arch in arches:
                artifact = build_arch(arch, pythons, k8py_wheel, version, args.out, work)
                size = os.path.getsize(artifact) / 2**20
                print(f"{os.path.relpath(artifact)}: {size:.1f} MB")
    except BuildError as exc:
        raise SystemExit(f"build_artifacts: {exc}") from None
    shutil.copy(os.path.join(ROOT, "install.sh"), os.path.join(args.out, "install.sh"))
    latest = os.path.join(args.out, "latest")
    if os.path.islink(latest) or os.path.exists(latest):
        os.remove(latest)
    os.symlink(version, latest)
    print(f"{os.path.relpath(args.out)}/install.sh, {os.path.relpath(latest)} -> {version}")


if __name__ == "__main__":
    main()
