"""Timestamps as the Kubernetes API writes them: RFC 3339, UTC, whole seconds
(`2026-11-26T09:30:00Z`, metav1.Time's JSON form)."""

from __future__ import annotations

import datetime


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def after(seconds: float) -> str:
    """The timestamp `seconds` from now."""
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str | None) -> float | None:
    """Seconds since the epoch of an API timestamp (also with fractions), None if unset."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def micro_now() -> str:
    """Now as a metav1.MicroTime (`2026-11-26T09:30:00.123456Z`), as Leases carry it."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
