"""What an informer does when its watch ends (`k8py.client.informer`), as client-go's
reflector: a broken watch (its server gone: 503; or 429, 500) is made again from the last
resourceVersion seen, without a list; only 410 (`Expired`) or a refused watch lists again.

The transport is a script: each list and watch answers the next scripted step, and records
the resourceVersion it was asked from (the behaviour against real servers is in
tests/integration/apiserver/test_agent_failover.py)."""

from __future__ import annotations

import asyncio

import pytest

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client import informer as informer_module
from k8py.client.client import Client
from k8py.client.informer import Informer

CONFIGMAPS = builtin("v1", "configmaps")


def configmap(name: str, version: str) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": version}}


class ScriptedTransport:
    """Lists answer `lists` in turn; watches play `watches` in turn: each a list of events
    then, optionally, an error raised; when the script runs out, a watch waits forever."""

    def __init__(self, lists: list[dict], watches: list[tuple[list, Exception | None]]):
        self.lists, self.watches = lists, watches
        self.listed, self.watched_from = 0, []

    async def call(self, method, ref, *, query=None, body=None, content_type=""):
        assert method == "GET"
        answer = self.lists[min(self.listed, len(self.lists) - 1)]
        self.listed += 1
        return answer

    async def watch(self, ref, query):
        self.watched_from.append(query["resourceVersion"])
        if not self.watches:
            await asyncio.Event().wait()
        events, error = self.watches.pop(0)
        for event in events:
            yield [event]
        if error is not None:
            raise error

    async def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch):
    monkeypatch.setattr(informer_module, "RETRY_MIN", 0.01)


async def _run_until(transport: ScriptedTransport, done) -> Informer:
    informer = Informer(Client(transport), CONFIGMAPS, "default")
    task = asyncio.create_task(informer.run())
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while not done(informer):
            assert asyncio.get_running_loop().time() < deadline, transport.watched_from
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return informer


LIST = {"metadata": {"resourceVersion": "10"}, "items": [configmap("a", "5")]}


@pytest.mark.parametrize("broken", [
    errors.ServiceUnavailable("watch interrupted: Connection closed"),
    errors.TooManyRequests("too many requests"),
    errors.InternalError("internal error"),
])
async def test_a_broken_watch_resumes_from_the_last_version_without_a_list(broken):
    transport = ScriptedTransport([LIST], [
        ([("ADDED", configmap("b", "11")), ("MODIFIED", configmap("a", "12"))], broken),
        ([("ADDED", configmap("c", "13"))], broken),
    ])
    informer = await _run_until(transport, lambda i: len(transport.watched_from) == 3)
    assert transport.listed == 1
    assert transport.watched_from == ["10", "12", "13"]
    assert sorted(informer.keys()) == ["default/a", "default/b", "default/c"]


async def test_a_watch_that_cannot_be_made_is_tried_again_from_the_same_version():
    unreachable = errors.ServiceUnavailable("cannot reach the API server")
    transport = ScriptedTransport([LIST], [([], unreachable), ([], unreachable)])
    await _run_until(transport, lambda i: len(transport.watched_from) == 3)
    assert transport.listed == 1
    assert transport.watched_from == ["10", "10", "10"]


async def test_an_expired_version_lists_again_and_watches_from_the_list():
    relisted = {"metadata": {"resourceVersion": "30"}, "items": [configmap("z", "29")]}
    transport = ScriptedTransport([LIST, relisted], [
        ([("ADDED", configmap("b", "11"))], errors.Expired("too old resource version: 11")),
    ])
    informer = await _run_until(transport, lambda i: len(transport.watched_from) == 2)
    assert transport.listed == 2
    assert transport.watched_from == ["10", "30"]
    assert informer.keys() == ["default/z"]  # the list replaced the cache


async def test_a_refused_watch_lists_again():
    transport = ScriptedTransport([LIST], [([], errors.Forbidden("forbidden"))])
    await _run_until(transport, lambda i: len(transport.watched_from) == 2)
    assert transport.listed == 2


async def test_a_version_the_store_has_not_reached_lists_again():
    """After a restore from an older snapshot, the version an informer holds is ahead of the
    store's: the server answers 504 "Too large resource version" and the informer lists
    (without a version) instead of waiting for the new history to pass its number."""
    restored = {"metadata": {"resourceVersion": "7"}, "items": [configmap("a", "5")]}
    too_large = errors.too_large_resource_version(12, 7)
    transport = ScriptedTransport([LIST, restored], [
        ([("ADDED", configmap("b", "11")), ("MODIFIED", configmap("a", "12"))], too_large),
    ])
    informer = await _run_until(transport, lambda i: len(transport.watched_from) == 2)
    assert transport.listed == 2
    assert transport.watched_from == ["10", "7"]
    assert informer.keys() == ["default/a"]
