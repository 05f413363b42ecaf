"""Shared test helpers: waiting on conditions with a deadline, never bare sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import signal
import time

import pytest


async def eventually(predicate, timeout: float = 5.0, interval: float = 0.01, what: str = ""):
    """Wait until predicate() (sync or async) is truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {what or predicate}")
        await asyncio.sleep(interval)


def wait_for(check, timeout: float, what: str, interval: float = 0.25):
    """The blocking twin of `eventually`, for tests that drive processes (kubectl) without an
    event loop: check() until it is truthy and return that; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds: a test leaves no
    process behind."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def small_tmpfs(mount, size: str):
    """A real tmpfs of `size` (`1m`) at the directory `mount` (made here), to fill up;
    the test is skipped where mounting is not allowed (not root). Unmounted on the way
    out."""
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                             str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
