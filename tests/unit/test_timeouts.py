"""Deadlines on awaits are `asyncio.timeout`, never `asyncio.wait_for`.

On Python 3.11 (Debian bookworm's, the Pi's), `wait_for` returns the awaited result when its
task is cancelled in the same loop step as that result arrives, and the cancellation is lost:
a loop that waits with a deadline (an elector renewing its lease, a worker waiting for a
wake-up) then never stops, and whoever cancelled it waits forever (a hung shutdown, and once
a hung CI run). `asyncio.timeout` runs the await in the caller's own task and cannot lose it.
"""

from __future__ import annotations

import ast
import asyncio
import os
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "k8py")


def wait_for_calls(path: str) -> list[int]:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "wait_for" and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "asyncio"]


def test_no_asyncio_wait_for_in_k8py():
    found = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found += [f"{os.path.relpath(path, PACKAGE)}:{line}"
                          for line in wait_for_calls(path)]
    assert not found, f"asyncio.wait_for (use asyncio.timeout): {found}"


async def cancelled_as_the_answer_arrives(wait) -> bool:
    """Whether a task waiting with `wait` ends when cancelled in the step its answer comes.
    The loop also ends when told to: a task that keeps dropping cancellations would otherwise
    outlive the test and hang the event loop's shutdown (as it once hung this file in CI)."""
    answer = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def wait_until_told():
        while not stop.is_set():
            await wait(answer)

    task = asyncio.create_task(wait_until_told())
    await asyncio.sleep(0)
    answer.set_result(1)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=0.5)
    stop.set()
    await asyncio.wait([task], timeout=5)
    assert task.done()
    return bool(done)


async def with_timeout(answer):
    async with asyncio.timeout(10):
        await answer
    await asyncio.sleep(0)


async def with_wait_for(answer):
    await asyncio.wait_for(answer, 10)
    await asyncio.sleep(0)


async def test_asyncio_timeout_keeps_the_cancellation():
    assert await cancelled_as_the_answer_arrives(with_timeout)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for was rewritten in 3.12")
async def test_why_wait_for_is_banned_here():
    assert not await cancelled_as_the_answer_arrives(with_wait_for)
