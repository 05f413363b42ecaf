"""Moving the calling thread into a named network namespace and back: what the e2e tests
(`tests.e2e.netns.entered`) and the benchmarks (`bench/benchlib.netns`) share. Sockets and
netlink calls made by the thread meanwhile (libnftables, pyroute2, asyncio servers) live in
that namespace."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """This thread in namespace `name` (under /run/netns) for as long as this lasts."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(target)
        try:
            yield
        finally:
            libc.setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
