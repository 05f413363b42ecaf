"""containerd, supervised as the agent's child, k3s-style.

`run_containerd(data_dir, ready)` is a Supervisor daemon (see `k8py.lifecycle`):
1. writes `<data-dir>/agent/containerd/config.toml` (`render_config`, a pure function; a
   version 2 config for containerd 1.6): its own root (`root/`), state (`state/`) and socket
   (`containerd.sock`; under /run/k8py if that path is too long for a unix socket) so it
   never meets a host containerd; the CRI plugin with cgroupfs
   (`SystemdCgroup = false`: PID 1 is not systemd on our hosts), runc's state under our
   state dir, the overlayfs snapshotter, `sandbox_image` = the local pause image,
   `restrict_oom_score_adj = true` when the process lacks CAP_SYS_RESOURCE (CapEff bit 24;
   without it RunPodSandbox fails setting oom_score_adj -998), CNI from
   `<data-dir>/agent/etc/cni/net.d` with the plugins in `/usr/lib/cni`, and its streaming
   server on 127.0.0.1 at a free port (exec/attach/port-forward URLs point at loopback).
   Plugins k8py never uses (other snapshotters, tracing, the v1 shim) are disabled;
2. starts `containerd --config ...` in its own session (a terminal's Ctrl-C is the agent's to
   handle), logging to `containerd.log`, with PDEATHSIG=SIGTERM so it ends with the agent,
   and its pid in `containerd.pid` (a containerd left by a killed agent is stopped first:
   two daemons cannot share a root);
3. waits until its CRI answers `Version`, imports the pause image if it is missing, and
   sets `ready`;
4. if containerd exits, clears `ready`, restarts it after a backoff (1 s doubling to 30 s,
   reset after a minute of running) and sets `ready` again. Pods survive: their shims are
   not containerd's children and a restarted containerd adopts them. Dying before it was
   ever ready is a failure of the daemon (the agent stops with the reason and the log's
   last line);
5. on cancellation, SIGTERM, then SIGKILL after `stop_timeout`. Running pods are left to
   their shims, as k3s does, so an agent restart adopts them.

`--container-runtime-endpoint` (`runtime_endpoint=`): nothing is started; the daemon waits
until that runtime answers, imports the pause image if it can, and sets `ready`.

Cgroups: sandboxes use `cgroup_parent = /k8py/pod<uid>`; see `k8py.agent.cgroups`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
import time

from grpclib.const import Status

from k8py import childprocess
from k8py.runtime.cri import CriClient, CriError, endpoint_path
from k8py.runtime.images import PAUSE_IMAGE, ImageError, ensure_pause_image

log = logging.getLogger(__name__)

CONTAINERD = "containerd"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni")
CAP_SYS_RESOURCE = 24
MAX_SOCKET_PATH = 104  # containerd's limit for a unix socket path
RUN_DIR = "/run/k8py"  # sockets whose path under the data dir would be too long

# Plugins containerd 1.6 loads by default that k8py has no use for (the v1 shim runtime
# cannot go: the tasks service, which the CRI plugin needs, requires it).
DISABLED_PLUGINS = (
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
)


class ContainerdError(Exception):
    """containerd could not be started (once; later deaths are restarted)."""


def containerd_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "agent", "containerd")


def socket_path(data_dir: str, runtime_endpoint: str | None = None) -> str:
    """The CRI socket the agent talks to: the given endpoint, else our containerd's:
    `<data-dir>/agent/containerd/containerd.sock`, unless that path is too long for a unix
    socket (containerd allows 104 bytes, including the `.ttrpc` suffix of its second
    socket); then `/run/k8py/containerd-<hash of the data dir>.sock`."""
    if runtime_endpoint:
        return endpoint_path(runtime_endpoint)
    directory = containerd_dir(os.path.abspath(data_dir))
    path = os.path.join(directory, "containerd.sock")
    if len((path + ".ttrpc").encode()) > MAX_SOCKET_PATH:
        digest = hashlib.sha256(directory.encode()).hexdigest()[:16]
        path = os.path.join(RUN_DIR, f"containerd-{digest}.sock")
    return path


def has_capability(bit: int, status: str | None = None) -> bool:
    """Whether this process's effective capabilities (/proc/self/status CapEff) hold bit."""
    if status is None:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                status = f.read()
        except OSError:
            return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def find_cni_bin_dir() -> str:
    for path in CNI_BIN_DIRS:
        if os.path.exists(os.path.join(path, "bridge")):
            return path
    return CNI_BIN_DIRS[0]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(directory: str, *, cni_conf_dir: str, cni_bin_dir: str,
                  stream_port: int, restrict_oom_score_adj: bool,
                  sandbox_image: str = PAUSE_IMAGE, socket: str | None = None) -> str:
    """containerd's config.toml (version 2) for a containerd living in `directory`,
    listening on `socket` (default `<directory>/containerd.sock`)."""
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    disabled = ", ".join(_toml(p) for p in DISABLED_PLUGINS)
    return f"""\
# Written by k8py on every start of containerd: edits are lost.
version = 2
root = {_toml(os.path.join(directory, "root"))}
state = {_toml(os.path.join(directory, "state"))}
disabled_plugins = [{disabled}]

[grpc]
  address = {_toml(socket or os.path.join(directory, "containerd.sock"))}

[plugins."io.containerd.internal.v1.opt"]
  path = {_toml(os.path.join(directory, "root", "opt"))}

{cri}]
  sandbox_image = {_toml(sandbox_image)}
  restrict_oom_score_adj = {str(restrict_oom_score_adj).lower()}
  stream_server_address = "127.0.0.1"
  stream_server_port = {_toml(str(stream_port))}
  enable_selinux = false
  netns_mounts_under_state_dir = true
  max_container_log_line_size = 16384

{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = {_toml(os.path.join(directory, "state", "runc"))}

{cri}.cni]
  bin_dir = {_toml(cni_bin_dir)}
  conf_dir = {_toml(cni_conf_dir)}
  max_conf_num = 1
"""


def write_config(data_dir: str) -> str:
    """Write config.toml for this start (a fresh stream port); its path."""
    data_dir = os.path.abspath(data_dir)
    directory = containerd_dir(data_dir)
    cni_conf_dir = os.path.join(data_dir, "agent", "etc", "cni", "net.d")
    sock = socket_path(data_dir)
    for path in (directory, cni_conf_dir, os.path.dirname(sock)):
        os.makedirs(path, mode=0o755 if path == cni_conf_dir else 0o700, exist_ok=True)
    text = render_config(directory, cni_conf_dir=cni_conf_dir, cni_bin_dir=find_cni_bin_dir(),
                         stream_port=free_port(), socket=sock,
                         restrict_oom_score_adj=not has_capability(CAP_SYS_RESOURCE))
    path = os.path.join(directory, "config.toml")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    return path


def _stop_leftover(pid_file: str, config_path: str, timeout: float) -> None:
    """Stop a containerd a killed agent left running on this data dir (blocking)."""
    try:
        with open(pid_file, encoding="ascii") as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except (OSError, ValueError):
        return
    if config_path.encode() not in cmdline:
        return
    log.warning("stopping containerd (pid %d) left running by a previous agent", pid)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not os.path.exists(f"/proc/{pid}"):
                return
            time.sleep(0.05)


async def _start(data_dir: str, binary: str, stop_timeout: float
                 ) -> asyncio.subprocess.Process:
    directory = containerd_dir(data_dir)
    config_path = await asyncio.to_thread(write_config, data_dir)
    pid_file = os.path.join(directory, "containerd.pid")
    await asyncio.to_thread(_stop_leftover, pid_file, config_path, stop_timeout)
    with open(os.path.join(directory, "containerd.log"), "ab") as log_file:
        try:
            proc = await asyncio.create_subprocess_exec(
                binary, "--config", config_path, stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file, stderr=log_file, start_new_session=True,
                preexec_fn=childprocess.die_with_parent)
        except OSError as exc:
            raise ContainerdError(f"cannot run {binary}: {exc.strerror}") from None
    with open(pid_file, "w", encoding="ascii") as f:
        f.write(f"{proc.pid}\n")
    log.info("containerd started (pid %d), socket %s", proc.pid, socket_path(data_dir))
    return proc


async def wait_answering(cri: CriClient, *, timeout: float | None,
                         proc: asyncio.subprocess.Process | None = None) -> str:
    """Poll the runtime's CRI Version until it answers; its name and version. Fails with
    ContainerdError when proc exits first or after timeout (None: wait forever)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last_error: CriError | None = None
    next_note = time.monotonic() + 10
    unimplemented_since: float | None = None
    while True:
        if proc is not None and proc.returncode is not None:
            raise ContainerdError(f"containerd exited with code {proc.returncode}")
        try:
            version = await cri.version()
            return f"{version.runtime_name} {version.runtime_version}"
        except CriError as exc:
            last_error = exc
        now = time.monotonic()
        if (last_error is not None and last_error.status is Status.UNIMPLEMENTED
                and unimplemented_since is None):
            unimplemented_since = now
        if unimplemented_since is not None and now - unimplemented_since > 5:
            raise ContainerdError("containerd answers but its CRI plugin did not load")
        if deadline is not None and now > deadline:
            raise ContainerdError(f"the runtime did not answer within {timeout:.0f}s "
                                  f"({last_error})")
        if now > next_note:
            log.info("waiting for the runtime at %s (%s)", cri.socket_path, last_error)
            next_note = now + 10
        await asyncio.sleep(0.05)


async def _prepare(cri: CriClient, sock: str, *, required: bool) -> None:
    try:
        await ensure_pause_image(cri, sock)
    except (ImageError, CriError) as exc:
        if required:
            raise ContainerdError(f"cannot import {PAUSE_IMAGE}: {exc}") from None
        log.warning("cannot import %s into the runtime: %s", PAUSE_IMAGE, exc)


async def run_containerd(data_dir: str, ready: asyncio.Event, *,
                         runtime_endpoint: str | None = None, binary: str = CONTAINERD,
                         start_timeout: float = 60.0, stop_timeout: float = 10.0,
                         backoff: tuple[float, float] = (1.0, 30.0)) -> None:
    """Run (and keep running) the node's containerd; see the module docstring."""
    data_dir = os.path.abspath(data_dir)
    sock = socket_path(data_dir, runtime_endpoint)
    async with CriClient(sock) as cri:
        if runtime_endpoint:
            answer = await wait_answering(cri, timeout=None)
            log.info("using the container runtime at %s (%s)", sock, answer)
            await _prepare(cri, sock, required=False)
            ready.set()
            await asyncio.Event().wait()  # nothing to supervise; run until cancelled
        log_path = os.path.join(containerd_dir(data_dir), "containerd.log")
        delay, ever_ready = backoff[0], False
        while True:
            proc = await _start(data_dir, binary, stop_timeout)
            try:
                try:
                    answer = await wait_answering(cri, timeout=start_timeout, proc=proc)
                    await _prepare(cri, sock, required=not ever_ready)
                except ContainerdError as exc:
                    if not ever_ready:
                        last = childprocess.last_log_line(log_path)
                        raise ContainerdError(f"{exc}{': ' + last if last else ''} "
                                              f"(log: {log_path})") from None
                    log.warning("containerd did not come back: %s", exc)
                else:
                    log.info("containerd ready (%s)", answer)
                    ever_ready = True
                    ready.set()
                    started = time.monotonic()
                    code = await proc.wait()
                    ready.clear()
                    if time.monotonic() - started > 60:
                        delay = backoff[0]
                    log.warning("containerd exited with code %s; restarting in %.0fs "
                                "(log: %s)", code, delay, log_path)
            finally:
                await childprocess.stop(proc, stop_timeout, "containerd")
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff[1])
