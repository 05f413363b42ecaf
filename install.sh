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
# etcd-server/etcd-client: the peer the store benchmark compares against (and, later, HA).
packages=(python3 python3-venv python3-pip sqlite3 etcd-server etcd-client ca-certificates)
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
echo "install.sh: $(/usr/local/bin/k8py --version)"
