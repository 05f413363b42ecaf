"""sd_notify's protocol: a datagram with the state to the socket NOTIFY_SOCKET names (a path,
or an abstract name written with a leading @); nothing when it is not set."""

from __future__ import annotations

import os
import socket
import uuid

from k8py.lifecycle import notify_service_manager


def test_ready_reaches_a_path_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify_service_manager("READY=1")
        assert listener.recv(64) == b"READY=1"


def test_ready_reaches_an_abstract_socket(monkeypatch):
    name = f"k8py-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify_service_manager("STOPPING=1")
        assert listener.recv(64) == b"STOPPING=1"


def test_without_a_service_manager_nothing_is_sent(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify_service_manager("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(tmp_path, "nobody-listens"))
    assert not notify_service_manager("READY=1")  # logged, never raised
