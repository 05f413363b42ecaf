"""Resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) as numbers.

CPU is counted in millicores and everything else in base units (bytes, counts), as the
scheduler and kubelet compare them. Parsing follows resource.Quantity's suffixes: binary
(Ki Mi Gi Ti Pi Ei), decimal (n u m k M G T P E) and exponents. Parsed values are memoized:
a cluster has few distinct quantity strings and many pods repeating them.
"""

from __future__ import annotations

import functools
import re

_SUFFIXES = {
    "": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "P": 1e15, "E": 1e18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40,
    "Pi": 2 ** 50, "Ei": 2 ** 60,
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$")


@functools.lru_cache(maxsize=4096)
def parse(value: str | int | float) -> float:
    """The quantity's value in base units; ValueError if it is not a quantity."""
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):  # null: what a document may hold before validation
        raise ValueError(f"a quantity must be a string or a number, not {value!r}")
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}")
    number, exponent, suffix = match.groups()
    if exponent:
        return float(number + exponent)
    return float(number) * _SUFFIXES[suffix or ""]


def milli(value: str | int | float) -> int:
    """CPU-style: the quantity in thousandths, rounded up (`100m` → 100, `1` → 1000)."""
    scaled = parse(value) * 1000
    whole = int(scaled)
    return whole if whole >= scaled else whole + 1


def amount(resource: str, value: str | int | float) -> int:
    """A request or capacity as the scheduler counts it: millicores for cpu, else units."""
    if resource == "cpu":
        return milli(value)
    parsed = parse(value)
    whole = int(parsed)
    return whole if whole >= parsed else whole + 1
