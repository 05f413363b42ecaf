#!/bin/sh
# k8py installer, after k3s's: one POSIX sh script, run from a checkout or piped.
#
#   curl -sfL <url>/install.sh | INSTALL_K8PY_ARTIFACT_URL=<url> sh -s - [server|agent] [flags]
#   sudo ./install.sh [server|agent] [flags]          (from a checkout: k8py from its source)
#
# The command is `server` unless K8PY_URL is set (then `agent`); the trailing arguments, or
# INSTALL_K8PY_EXEC, give the command and its flags. Environment:
#   K8PY_URL, K8PY_TOKEN | K8PY_TOKEN_FILE  join this host as an agent of that server
#   K8PY_*                           every one goes into the service's environment file
#                                    (mode 0600; k8py reads K8PY_<FLAG> for each --flag)
#   INSTALL_K8PY_EXEC                the command and flags (instead of the arguments)
#   INSTALL_K8PY_VERSION             the release to install (default: latest)
#   INSTALL_K8PY_ARTIFACT_URL        where the release artifacts are served
#                                    (<url>/<version>/k8py-linux-<arch>.tar.gz and
#                                    sha256sum-<arch>.txt; tools/build_artifacts.py)
#   INSTALL_K8PY_SKIP_DOWNLOAD=true  airgap: the artifact and its sha256sum file are already
#                                    in INSTALL_K8PY_ARTIFACT_DIR (default: this directory)
#   INSTALL_K8PY_SKIP_PACKAGES=true  install no system packages (they are there already)
#   INSTALL_K8PY_SKIP_ENABLE=true    do not enable the service at boot (nor start it)
#   INSTALL_K8PY_SKIP_START=true     do not start (or restart) the service
#   INSTALL_K8PY_BIN_DIR             where k8py and the scripts go (default /usr/local/bin)
#   INSTALL_K8PY_LIB_DIR             where k8py's environment goes (default /usr/local/lib/k8py)
#   INSTALL_K8PY_SYSTEMD_DIR         where the unit goes (default /etc/systemd/system)
#   INSTALL_K8PY_NAME                the service's name: k8py-<name> (default k8py for a
#                                    server, k8py-agent for an agent)
#
# Running it again upgrades or reconfigures, and restarts the service only if something
# changed. Any failure is one line on stderr and a non-zero exit.
set -e
set -o noglob

info() { echo "[INFO]  $*"; }
warn() { echo "[WARN]  $*" >&2; }
fatal() { echo "[ERROR] $*" >&2; exit 1; }

is_true() { [ "$1" = true ]; }

# --- what to install and how it runs ------------------------------------------------------

quote() {  # each argument single-quoted, for a shell or a unit's ExecStart
    for arg in "$@"; do
        printf "'%s' " "$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")"
    done
}

setup_env() {
    case "$1" in
        ("") CMD_K8PY= ;;
        (-*) CMD_K8PY= ;;
        (*) CMD_K8PY=$1; shift ;;
    esac
    if [ -z "$CMD_K8PY" ] && [ -n "$INSTALL_K8PY_EXEC" ]; then
        # shellcheck disable=SC2086 # the words of INSTALL_K8PY_EXEC are meant to split
        set -- $INSTALL_K8PY_EXEC "$@"
        case "$1" in
            (server|agent) CMD_K8PY=$1; shift ;;
        esac
    fi
    if [ -z "$CMD_K8PY" ]; then
        if [ -n "$K8PY_URL" ]; then CMD_K8PY=agent; else CMD_K8PY=server; fi
    fi
    case "$CMD_K8PY" in
        (server|agent) ;;
        (*) fatal "unknown command '$CMD_K8PY': server or agent" ;;
    esac
    if [ "$CMD_K8PY" = agent ]; then
        [ -n "$K8PY_URL" ] || fatal "an agent needs K8PY_URL (https://<server>:6443)"
        [ -n "$K8PY_TOKEN" ] || [ -n "$K8PY_TOKEN_FILE" ] || \
            fatal "an agent needs K8PY_TOKEN or K8PY_TOKEN_FILE (the server's join token)"
    fi
    CMD_ARGS=$(quote "$@")
    DATA_DIR=$(flag_value "${K8PY_DATA_DIR:-/var/lib/k8py}" --data-dir -d "$@")
    KUBECONFIG_FILE=
    [ "$CMD_K8PY" = server ] && KUBECONFIG_FILE=$(flag_value \
        "${K8PY_WRITE_KUBECONFIG:-/etc/k8py/k8py.yaml}" --write-kubeconfig -o "$@")

    BIN_DIR=${INSTALL_K8PY_BIN_DIR:-/usr/local/bin}
    LIB_DIR=${INSTALL_K8PY_LIB_DIR:-/usr/local/lib/k8py}
    SYSTEMD_DIR=${INSTALL_K8PY_SYSTEMD_DIR:-/etc/systemd/system}
    if [ -n "$INSTALL_K8PY_NAME" ]; then
        SYSTEM_NAME=k8py-$INSTALL_K8PY_NAME
    elif [ "$CMD_K8PY" = agent ]; then
        SYSTEM_NAME=k8py-agent
    else
        SYSTEM_NAME=k8py
    fi
    case "$SYSTEM_NAME" in
        (*[!a-z0-9.-]*) fatal "INSTALL_K8PY_NAME may hold only a-z, 0-9, '.' and '-'" ;;
    esac
    VERSION=${INSTALL_K8PY_VERSION:-latest}
    FILE_SERVICE=$SYSTEMD_DIR/$SYSTEM_NAME.service
    FILE_ENV=$SYSTEMD_DIR/$SYSTEM_NAME.service.env
    FILE_OPENRC=/etc/init.d/$SYSTEM_NAME
    FILE_OPENRC_ENV=/etc/k8py/$SYSTEM_NAME.env
    KILLALL=$BIN_DIR/k8py-killall.sh
    UNINSTALL=$BIN_DIR/k8py-uninstall.sh
    [ "$SYSTEM_NAME" = k8py ] || UNINSTALL=$BIN_DIR/$SYSTEM_NAME-uninstall.sh
}

flag_value() {  # flag_value DEFAULT LONG SHORT ARGS...: the value the arguments give a flag
    value=$1 long=$2 short=$3
    shift 3
    while [ $# -gt 0 ]; do
        case "$1" in
            ("$long"=*) value=${1#"$long"=} ;;
            ("$long"|"$short") [ $# -gt 1 ] && value=$2 && shift ;;
        esac
        shift
    done
    echo "$value"
}

# --- the host -------------------------------------------------------------------------------

verify_system() {
    [ "$(id -u)" -eq 0 ] || fatal "run as root (sudo sh -s - ... or sudo ./install.sh)"
    if [ -x /sbin/openrc-run ] && ! [ -d /run/systemd/system ]; then
        INIT=openrc
    elif [ -d /run/systemd/system ]; then
        INIT=systemd
    else
        INIT=none  # a container or chroot: the unit is written, nothing is started
    fi
}

detect_platform() {
    case "$(uname -m)" in
        (x86_64|amd64) ARCH=x86_64 ;;
        (aarch64|arm64) ARCH=aarch64 ;;
        (armv7l|armv8l|armhf) ARCH=armv7l ;;
        (*) fatal "unsupported architecture $(uname -m): x86_64, aarch64 and armv7l are" ;;
    esac
    DISTRO=unknown
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        DISTRO=$(. /etc/os-release && echo "${ID:-unknown}")
    fi
    case "$DISTRO" in
        (debian|ubuntu|raspbian) PACKAGER=apt ;;
        (alpine) PACKAGER=apk ;;
        (fedora|rhel|centos|rocky|almalinux) PACKAGER=dnf ;;
        (*) PACKAGER=none ;;
    esac
    info "host: $DISTRO on $ARCH, init: $INIT"
}

check_host() {
    memory_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
    if [ "${memory_kb:-0}" -gt 0 ] && [ "$memory_kb" -lt 400000 ]; then
        fatal "too little memory: $((memory_kb / 1024)) MB; k8py needs 512 MB"
    fi
    case " $CMD_ARGS " in
        (*"'--disable-agent'"*) return 0 ;;  # no pods here: the rest is the agent's
    esac
    if ! memory_cgroup; then
        model=$(tr -d '\0' < /proc/device-tree/model 2>/dev/null || true)
        case "$model" in
            (*"Raspberry Pi"*)
                cmdline=/boot/firmware/cmdline.txt
                [ -f "$cmdline" ] || cmdline=/boot/cmdline.txt
                fatal "the memory cgroup is disabled: add 'cgroup_memory=1 cgroup_enable=memory' to the end of the line in $cmdline, then reboot" ;;
            (*)
                fatal "the memory cgroup is disabled: add 'cgroup_enable=memory' to the kernel's command line, then reboot" ;;
        esac
    fi
    if ! [ -d /sys/module/vxlan ] && ! modinfo vxlan >/dev/null 2>&1; then
        if [ "$DISTRO" = ubuntu ] && [ "$ARCH" != x86_64 ]; then
            warn "this kernel has no VXLAN module: install linux-modules-extra-raspi, or run with --flannel-backend host-gw"
        else
            warn "this kernel has no VXLAN module: pods on other nodes are reached only with --flannel-backend host-gw"
        fi
    fi
}

memory_cgroup() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        grep -qw memory /sys/fs/cgroup/cgroup.controllers
    else
        awk '$1 == "memory" && $4 == 1 {found = 1} END {exit !found}' /proc/cgroups 2>/dev/null
    fi
}

install_packages() {
    # what k8py runs with: python3 (and venv), containerd, runc, the CNI plugins, nftables,
    # busybox-static (the local pause image is built from it), iproute2; curl and
    # ca-certificates to fetch the artifact
    if is_true "$INSTALL_K8PY_SKIP_PACKAGES"; then
        info "packages: skipped (INSTALL_K8PY_SKIP_PACKAGES)"
        return 0
    fi
    case "$PACKAGER" in
        (apt)
            wanted="python3 python3-venv ca-certificates curl containerd runc containernetworking-plugins nftables busybox-static iproute2 $EXTRA_PACKAGES"
            missing=
            for package in $wanted; do
                dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || \
                    missing="$missing $package"
            done
            if [ -n "$missing" ]; then
                info "packages: installing$missing"
                apt-get update -qq >/dev/null || fatal "apt-get update failed"
                # shellcheck disable=SC2086 # one word per package
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
                    >/dev/null || fatal "apt-get could not install$missing"
            fi ;;
        (apk)
            # shellcheck disable=SC2086
            apk add --no-cache -q python3 ca-certificates curl containerd runc cni-plugins \
                nftables busybox-static iproute2 || fatal "apk could not install k8py's packages" ;;
        (dnf)
            # shellcheck disable=SC2086
            dnf install -y -q python3 ca-certificates curl containerd runc \
                containernetworking-plugins nftables busybox iproute || \
                fatal "dnf could not install k8py's packages" ;;
        (*)
            warn "unknown distribution '$DISTRO': install python3 (3.11+, with venv), containerd, runc, the CNI plugins, nftables and busybox yourself" ;;
    esac
    command -v python3 >/dev/null || fatal "python3 is missing"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
        fatal "k8py needs Python 3.11 or newer; $(python3 --version 2>&1) found"
    command -v nft >/dev/null || fatal "nftables is missing (nft): k8py's Services and NetworkPolicy need it"
}

# --- k8py itself ----------------------------------------------------------------------------

fetch_artifact() {
    # sets SOURCE: the artifact tarball, or the checkout; SOURCE_ID: what identifies it
    TMP_DIR=$(mktemp -d)
    trap 'rm -rf "$TMP_DIR"' EXIT
    artifact=k8py-linux-$ARCH.tar.gz
    sums=sha256sum-$ARCH.txt
    here=$(dirname "$0")
    if is_true "$INSTALL_K8PY_SKIP_DOWNLOAD"; then
        from=${INSTALL_K8PY_ARTIFACT_DIR:-.}
        [ -f "$from/$artifact" ] || fatal "airgap: no $from/$artifact (set INSTALL_K8PY_ARTIFACT_DIR)"
        [ -f "$from/$sums" ] || fatal "airgap: no $from/$sums beside the artifact"
        cp "$from/$artifact" "$from/$sums" "$TMP_DIR/"
    elif [ -z "$INSTALL_K8PY_ARTIFACT_URL" ] && [ -f "$0" ] && [ -f "$here/pyproject.toml" ] \
            && grep -q '^name = "k8py"' "$here/pyproject.toml"; then
        SOURCE=$(cd "$here" && pwd)
        SOURCE_ID="checkout $(cd "$SOURCE" && find pyproject.toml k8py -type f \
            ! -path '*/__pycache__/*' -exec sha256sum {} + | sort | sha256sum | cut -d' ' -f1)"
        info "k8py: from the checkout $SOURCE"
        return 0
    else
        [ -n "$INSTALL_K8PY_ARTIFACT_URL" ] || \
            fatal "set INSTALL_K8PY_ARTIFACT_URL to where k8py's release artifacts are served"
        url=${INSTALL_K8PY_ARTIFACT_URL%/}/$VERSION
        info "k8py: downloading $url/$artifact"
        curl -sfL -o "$TMP_DIR/$artifact" "$url/$artifact" || fatal "cannot download $url/$artifact"
        curl -sfL -o "$TMP_DIR/$sums" "$url/$sums" || fatal "cannot download $url/$sums"
    fi
    (cd "$TMP_DIR" && sha256sum -c --status "$sums") || \
        fatal "$artifact does not match its sha256sum: not installing it"
    SOURCE=$TMP_DIR/$artifact
    SOURCE_ID=$(cut -d' ' -f1 "$TMP_DIR/$sums")
    tar -xzf "$SOURCE" -C "$TMP_DIR" || fatal "cannot unpack $artifact"
    EXTRA_PACKAGES=$(tr '\n' ' ' < "$TMP_DIR/k8py/debian-packages")
}

install_k8py() {
    # each build in its own environment (a virtual environment is not relocatable), then
    # `current` switched to it; the one before is removed
    if [ -f "$LIB_DIR/source" ] && [ "$(cat "$LIB_DIR/source")" = "$SOURCE_ID" ] && \
            [ -x "$LIB_DIR/current/bin/k8py" ]; then
        info "k8py: $("$LIB_DIR/current/bin/k8py" --version) is installed already"
        return 0
    fi
    build=k8py-$(echo "$SOURCE_ID" | sha256sum | cut -c1-12)
    target=$LIB_DIR/$build
    mkdir -p "$LIB_DIR"
    rm -rf "$target"
    site=
    [ -n "$EXTRA_PACKAGES" ] && site=--system-site-packages  # see tools/build_artifacts.py
    python3 -m venv $site "$target" || fatal "python3 -m venv failed"
    log=$LIB_DIR/install.log
    if [ -d "$SOURCE" ]; then
        info "k8py: installing from $SOURCE (and its dependencies from PyPI)"
        "$target/bin/python" -m pip install -q "$SOURCE" >"$log" 2>&1 || \
            fatal "pip could not install k8py: $(grep -m1 ERROR "$log" || tail -n1 "$log") (log: $log)"
    else
        info "k8py: installing $(cat "$TMP_DIR/k8py/VERSION") from the artifact's wheels"
        "$target/bin/python" -m pip install -q --no-index \
            --find-links "$TMP_DIR/k8py/wheels" k8py >"$log" 2>&1 || \
            fatal "pip could not install k8py from the artifact (Python $(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')): $(grep -m1 ERROR "$log" || tail -n1 "$log") (log: $log)"
    fi
    ln -sfn "$build" "$LIB_DIR/current"
    set +o noglob
    for old in "$LIB_DIR"/k8py-*; do
        [ "$old" = "$target" ] || rm -rf "$old"
    done
    set -o noglob
    echo "$SOURCE_ID" > "$LIB_DIR/source"
    CHANGED=true
    info "k8py: $("$LIB_DIR/current/bin/k8py" --version) installed in $target"
}

link_binaries() {
    mkdir -p "$BIN_DIR"
    if [ "$(readlink "$BIN_DIR/k8py" 2>/dev/null)" != "$LIB_DIR/current/bin/k8py" ]; then
        ln -sf "$LIB_DIR/current/bin/k8py" "$BIN_DIR/k8py"
    fi
    if ! command -v kubectl >/dev/null 2>&1; then
        info "kubectl: none on the PATH; k8py has no kubectl of its own: use any kubectl 1.27-1.33 with /etc/k8py/k8py.yaml"
    fi
}

# --- files that changes go through: write to a temporary, replace only if different -----------

put_file() {  # put_file PATH MODE: stdin becomes PATH; CHANGED=true if it differed
    tmp=$TMP_DIR/put.$$
    cat > "$tmp"
    chmod "$2" "$tmp"
    if [ -f "$1" ] && cmp -s "$tmp" "$1"; then
        chmod "$2" "$1"
        rm -f "$tmp"
        return 0
    fi
    mkdir -p "$(dirname "$1")"
    mv "$tmp" "$1"
    CHANGED=true
}

write_killall() {
    put_file "$KILLALL" 755 <<EOF
#!/bin/sh
# Stop k8py and every pod it started: containers and their shims, mounts, the pods'
# network namespaces, cni0/flannel.1/k8py-dns, k8py's routes and nftables tables, cgroups.
# Written by k8py's install.sh. The data stays: starting k8py again brings the pods back.
[ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"

if [ -d /run/systemd/system ]; then
    for unit in $SYSTEMD_DIR/k8py*.service; do
        [ -f "\$unit" ] && systemctl stop "\$(basename "\$unit")" 2>/dev/null
    done
fi
for script in /etc/init.d/k8py*; do
    [ -x "\$script" ] && "\$script" stop >/dev/null 2>&1
done
if [ -x "$LIB_DIR/current/bin/k8py" ]; then
    for record in "$LIB_DIR"/installed/*; do
        [ -f "\$record" ] || continue
        "$LIB_DIR/current/bin/k8py" killall --data-dir "\$(sed -n 's/^data-dir //p' "\$record")"
    done
else  # k8py itself is gone: at least its network
    for link in cni0 flannel.1 k8py-dns; do ip link delete "\$link" 2>/dev/null; done
    ip route flush proto 163 2>/dev/null
    for table in k8py k8py-policy; do nft delete table ip "\$table" 2>/dev/null; done
fi
exit 0
EOF
}

write_uninstall() {
    mkdir -p "$LIB_DIR/installed"
    printf 'data-dir %s\nkubeconfig %s\n' "$DATA_DIR" "$KUBECONFIG_FILE" | \
        put_file "$LIB_DIR/installed/$SYSTEM_NAME" 644
    remove_kubeconfig=
    if [ -n "$KUBECONFIG_FILE" ]; then
        remove_kubeconfig="rm -f $(quote "$KUBECONFIG_FILE")
rmdir $(quote "$(dirname "$KUBECONFIG_FILE")")2>/dev/null || true"
    fi
    put_file "$UNINSTALL" 755 <<EOF
#!/bin/sh
# Remove $SYSTEM_NAME: k8py-killall.sh first, then the service, its environment file, its
# data ($DATA_DIR) and kubeconfig; and when it is the last k8py service here, k8py itself
# (the binaries, $LIB_DIR). Written by k8py's install.sh.
set -e
[ "\$(id -u)" -eq 0 ] || exec sudo "\$0" "\$@"

"$KILLALL"
if [ -d /run/systemd/system ]; then
    systemctl disable "$SYSTEM_NAME" >/dev/null 2>&1 || true
    systemctl reset-failed "$SYSTEM_NAME" >/dev/null 2>&1 || true
fi
if [ -x /sbin/rc-update ]; then
    rc-update delete "$SYSTEM_NAME" default >/dev/null 2>&1 || true
fi
rm -f "$FILE_SERVICE" "$FILE_ENV" "$FILE_OPENRC" "$FILE_OPENRC_ENV" /var/log/$SYSTEM_NAME.log
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
rm -rf "$DATA_DIR"
$remove_kubeconfig
rmdir /etc/k8py 2>/dev/null || true
rm -f "$LIB_DIR/installed/$SYSTEM_NAME" "$UNINSTALL"
others=
for record in "$LIB_DIR"/installed/*; do
    [ -f "\$record" ] && others="\$others \$(basename "\$record")"
done
if [ -n "\$others" ]; then
    echo "k8py: $SYSTEM_NAME removed; k8py stays for\$others"
    exit 0
fi
rm -f "$BIN_DIR/k8py" "$KILLALL"
rm -rf "$LIB_DIR"
echo "k8py: uninstalled"
EOF
}

write_service() {
    # the environment: every K8PY_* variable (K8PY_URL is K8PY_SERVER for k8py agent)
    {
        env | grep '^K8PY_' | sort || true
        [ -n "$K8PY_URL" ] && [ -z "$K8PY_SERVER" ] && echo "K8PY_SERVER=$K8PY_URL"
        true
    } | put_file "$([ "$INIT" = openrc ] && echo "$FILE_OPENRC_ENV" || echo "$FILE_ENV")" 600
    if [ "$INIT" = openrc ]; then
        put_file "$FILE_OPENRC" 755 <<EOF
#!/sbin/openrc-run
# $SYSTEM_NAME, written by k8py's install.sh
depend() {
    after network-online
    want cgroups
}
supervisor=supervise-daemon
name=$SYSTEM_NAME
command="$BIN_DIR/k8py"
command_args="$CMD_K8PY $CMD_ARGS"
output_log=/var/log/$SYSTEM_NAME.log
error_log=/var/log/$SYSTEM_NAME.log
pidfile=/var/run/$SYSTEM_NAME.pid
respawn_delay=5
respawn_max=0
set -o allexport
[ -f "$FILE_OPENRC_ENV" ] && . "$FILE_OPENRC_ENV"
set +o allexport
EOF
        return 0
    fi
    put_file "$FILE_SERVICE" 644 <<EOF
[Unit]
Description=k8py: lightweight Kubernetes ($CMD_K8PY)
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
EnvironmentFile=-$FILE_ENV
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStartPre=-/sbin/modprobe vxlan
ExecStart=$BIN_DIR/k8py $CMD_K8PY $CMD_ARGS

[Install]
WantedBy=multi-user.target
EOF
}

start_service() {
    if is_true "$INSTALL_K8PY_SKIP_ENABLE"; then
        info "service: $SYSTEM_NAME not enabled (INSTALL_K8PY_SKIP_ENABLE)"
        return 0
    fi
    case "$INIT" in
        (systemd)
            systemctl daemon-reload
            systemctl enable "$SYSTEM_NAME" >/dev/null 2>&1 || fatal "systemctl enable $SYSTEM_NAME failed"
            is_true "$INSTALL_K8PY_SKIP_START" && { info "service: enabled, not started (INSTALL_K8PY_SKIP_START)"; return 0; }
            if [ "$CHANGED" = true ] || ! systemctl is-active -q "$SYSTEM_NAME"; then
                info "service: (re)starting $SYSTEM_NAME"
                systemctl restart "$SYSTEM_NAME" || fatal "$SYSTEM_NAME did not start: journalctl -u $SYSTEM_NAME"
            else
                info "service: $SYSTEM_NAME unchanged and running"
            fi ;;
        (openrc)
            rc-update add "$SYSTEM_NAME" default >/dev/null || fatal "rc-update add $SYSTEM_NAME failed"
            is_true "$INSTALL_K8PY_SKIP_START" && return 0
            if [ "$CHANGED" = true ]; then
                "$FILE_OPENRC" restart || fatal "$SYSTEM_NAME did not start: /var/log/$SYSTEM_NAME.log"
            fi ;;
        (none)
            info "service: no systemd or openrc running here; start it with: $BIN_DIR/k8py $CMD_K8PY $CMD_ARGS" ;;
    esac
}

main() {
    verify_system
    setup_env "$@"
    detect_platform
    CHANGED=false
    EXTRA_PACKAGES=
    fetch_artifact
    check_host
    install_packages
    install_k8py
    link_binaries
    write_killall
    write_uninstall
    write_service
    start_service
    info "done: $SYSTEM_NAME ($CMD_K8PY); stop everything with $KILLALL, remove it with $UNINSTALL"
}

main "$@"
