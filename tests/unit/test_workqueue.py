import asyncio

from k8py.client.workqueue import ShutDown, WorkQueue


async def test_a_key_queued_twice_is_processed_once():
    queue = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert await queue.get() == "a"
    assert await queue.get() == "b"


async def test_a_key_added_while_processing_comes_back_after_done():
    queue = WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")
    assert len(queue) == 0  # not handed to a second worker meanwhile
    queue.done(key)
    assert await asyncio.wait_for(queue.get(), 1) == "a"


async def test_rate_limited_retries_back_off_and_forget_resets():
    queue = WorkQueue(base_delay=0.01, max_delay=0.04)
    loop = asyncio.get_running_loop()
    delays = []
    for _ in range(4):
        began = loop.time()
        queue.add_rate_limited("k")
        key = await asyncio.wait_for(queue.get(), 1)
        delays.append(loop.time() - began)
        queue.done(key)
    assert delays[1] >= 0.019 and delays[3] < 0.5
    assert queue.failures("k") == 4
    queue.forget("k")
    assert queue.failures("k") == 0


async def test_add_after_keeps_the_earliest_and_shutdown_wakes_workers():
    queue = WorkQueue()
    queue.add_after("k", 5)
    queue.add_after("k", 0.01)
    assert await asyncio.wait_for(queue.get(), 1) == "k"
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.shutdown()
    try:
        await asyncio.wait_for(waiter, 1)
    except ShutDown:
        pass
    else:
        raise AssertionError("get() returned after shutdown")
