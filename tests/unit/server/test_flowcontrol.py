"""The fair queue behind --max-(mutating-)requests-inflight: seats, per-flow queues served in
turn, bounded queues, the wait limit, and requests whose client left while they waited."""

from __future__ import annotations

import asyncio

import pytest

from k8py.server.apiserver.flowcontrol import FairQueue, Rejected


async def _settle() -> None:
    """Let every runnable task take its step (no timing involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Served:
    """Tasks that acquire a seat, note the order they got it in, and hold it until told."""

    def __init__(self, queue: FairQueue):
        self.queue, self.order, self.tasks = queue, [], []

    def start(self, flow: str, label: str) -> asyncio.Task:
        async def run():
            await self.queue.acquire(flow)
            self.order.append(label)
        task = asyncio.create_task(run())
        self.tasks.append(task)
        return task


async def test_free_seats_are_taken_at_once_and_given_back():
    queue = FairQueue(2)
    await queue.acquire("a")
    await queue.acquire("b")
    assert queue.serving == 2 and queue.queued == 0
    queue.release()
    queue.release()
    assert queue.serving == 0


async def test_a_flood_costs_another_flow_one_turn_not_the_flood():
    queue = FairQueue(1)
    await queue.acquire("holder")
    served = Served(queue)
    for i in range(20):
        served.start("flood", f"flood{i}")
    await _settle()
    served.start("bob", "bob0")
    served.start("bob", "bob1")
    await _settle()
    assert queue.queued == 22 and served.order == []
    for _ in range(6):  # each served request gives its seat back in turn
        queue.release()
        await _settle()
    # flows alternate: the flood's oldest, bob's, the flood's next, bob's last, ...
    assert served.order == ["flood0", "bob0", "flood1", "bob1", "flood2", "flood3"]
    assert queue.serving == 1
    for task in served.tasks:
        task.cancel()
    await asyncio.gather(*served.tasks, return_exceptions=True)
    assert queue.queued == 0


async def test_a_full_flow_queue_rejects_that_flow_only():
    queue = FairQueue(1, per_flow=3, per_pool=5)
    await queue.acquire("holder")
    served = Served(queue)
    for i in range(3):
        served.start("flood", f"flood{i}")
    await _settle()
    with pytest.raises(Rejected):
        await queue.acquire("flood")
    assert queue.rejected["flood"] == 1
    served.start("bob", "bob0")
    served.start("carol", "carol0")
    await _settle()
    assert queue.queued == 5
    with pytest.raises(Rejected):  # the pool's bound
        await queue.acquire("dave")
    queue.release()
    await _settle()
    assert served.order == ["flood0"]
    for task in served.tasks:
        task.cancel()
    await asyncio.gather(*served.tasks, return_exceptions=True)


async def test_a_request_that_waits_too_long_is_rejected_and_leaves_its_queue():
    queue = FairQueue(1, wait_limit=0.05)
    await queue.acquire("holder")
    with pytest.raises(Rejected):
        await queue.acquire("slow")
    assert queue.queued == 0 and queue.rejected["slow"] == 1 and queue.waited["slow"] == 1
    queue.release()
    assert queue.serving == 0


async def test_a_waiting_request_whose_client_left_frees_its_place():
    queue = FairQueue(1)
    await queue.acquire("holder")
    served = Served(queue)
    gone = served.start("flood", "gone")
    served.start("bob", "bob0")
    await _settle()
    gone.cancel()  # what aiohttp does to the handler when the client disconnects
    await _settle()
    assert queue.queued == 1
    queue.release()
    await _settle()
    assert served.order == ["bob0"] and queue.serving == 1
    queue.release()
    assert queue.serving == 0


async def test_a_seat_handed_to_a_request_cancelled_meanwhile_passes_on():
    queue = FairQueue(1)
    await queue.acquire("holder")
    served = Served(queue)
    leaving = served.start("a", "a0")
    served.start("b", "b0")
    await _settle()
    queue.release()  # the seat goes to a0 ...
    leaving.cancel()  # ... whose client leaves before it runs again
    await _settle()
    assert served.order == ["b0"] and queue.serving == 1 and queue.queued == 0
    queue.release()
    assert queue.serving == 0
