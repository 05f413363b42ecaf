"""Resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) as numbers.

CPU is counted in millicores and everything else in base units (bytes, counts), as the
scheduler and kubelet compare them. Parsing follows resource.Quantity's suffixes: binary
(Ki Mi Gi Ti Pi Ei), decimal (n u m k M G T P E) and exponents. Parsed values are memoized:
a cluster has few distinct quantity strings and many pods repeating them.

`Quantity` is the exact twin, for what must add up and print as upstream does (quota
usage, LimitRange bounds): an exact value (nonzero values rounded up to a multiple of 1n,
as resource.ParseQuantity does) with the format its text was written in (DecimalSI,
BinarySI or DecimalExponent). `str()` is Go's canonical form: `1500m`, `1536Mi`, `2`, `1e3`;
a sum keeps the format of its left side unless that side is zero, as Quantity.Add does.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

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


DECIMAL_SI, BINARY_SI, DECIMAL_EXPONENT = "DecimalSI", "BinarySI", "DecimalExponent"
_DECIMAL_EXPONENT_OF = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12,
                        "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL_EXPONENT_OF.items()}
_BINARY_SUFFIX = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
_NANO = 10 ** 9


class Quantity:
    """An exact resource.Quantity: `value` (a Fraction) and `format`. Compared by value."""

    __slots__ = ("value", "format")

    def __init__(self, value: Fraction | int = 0, format: str = DECIMAL_SI):
        self.value = Fraction(value)
        self.format = format

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def parse(text: str | int | float) -> "Quantity":
        """ValueError if `text` is not a quantity. JSON numbers read as their text."""
        if isinstance(text, bool):
            raise ValueError(f"not a quantity: {text!r}")
        match = _QUANTITY.match(str(text).strip())
        if not match:
            raise ValueError(f"quantities must match the regular expression "
                             f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text!r}")
        number, exponent, suffix = match.groups()
        value = Fraction(number)
        if exponent:
            value *= Fraction(10) ** int(exponent[1:])
            form = DECIMAL_EXPONENT
        elif suffix and suffix.endswith("i"):
            value *= 2 ** (10 * _BINARY_SUFFIX.index(suffix))
            form = BINARY_SI
        else:
            value *= Fraction(10) ** _DECIMAL_EXPONENT_OF[suffix or ""]
            form = DECIMAL_SI
        value = _round_up_to_nano(value)
        if form == BINARY_SI and 0 < abs(value) < 1:
            form = DECIMAL_SI
        return Quantity(value, form)

    # --- arithmetic (a new Quantity each time: parsed ones are shared) -----------------------

    def __add__(self, other: "Quantity") -> "Quantity":
        return Quantity(self.value + other.value,
                        other.format if self.value == 0 else self.format)

    def __sub__(self, other: "Quantity") -> "Quantity":
        return Quantity(self.value - other.value,
                        other.format if self.value == 0 else self.format)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __lt__(self, other: "Quantity") -> bool:
        return self.value < other.value

    def __le__(self, other: "Quantity") -> bool:
        return self.value <= other.value

    def __gt__(self, other: "Quantity") -> bool:
        return self.value > other.value

    def __ge__(self, other: "Quantity") -> bool:
        return self.value >= other.value

    def sign(self) -> int:
        return (self.value > 0) - (self.value < 0)

    def whole(self) -> int:
        """Quantity.Value(): rounded up to an integer."""
        return math.ceil(self.value)

    def milli(self) -> int:
        """Quantity.MilliValue(): thousandths, rounded up."""
        return math.ceil(self.value * 1000)

    def __repr__(self) -> str:
        return f"Quantity({str(self)!r}, {self.format})"

    def __str__(self) -> str:
        """Go's canonical form (Quantity.String)."""
        value = self.value
        if value == 0:
            return "0"
        sign = "-" if value < 0 else ""
        magnitude = abs(value)
        form = self.format
        if form == BINARY_SI:
            if magnitude < 1024 or magnitude.denominator != 1:
                form = DECIMAL_SI
            else:
                number, power = int(magnitude), 0
                while number % 1024 == 0 and power < len(_BINARY_SUFFIX) - 1:
                    number, power = number // 1024, power + 1
                return f"{sign}{number}{_BINARY_SUFFIX[power]}"
        # mantissa * 10**exponent, trailing zeros moved into the exponent, which is then
        # lowered to a multiple of 3 (AsCanonicalBytes)
        mantissa, exponent = math.ceil(_round_up_to_nano(magnitude) * _NANO), -9
        while mantissa % 10 == 0:
            mantissa, exponent = mantissa // 10, exponent + 1
        while exponent % 3:
            mantissa, exponent = mantissa * 10, exponent - 1
        if form == DECIMAL_SI and exponent in _DECIMAL_SUFFIX:
            suffix = _DECIMAL_SUFFIX[exponent]
        else:
            suffix = f"e{exponent}" if exponent else ""
        return f"{sign}{mantissa}{suffix}"


def _round_up_to_nano(value: Fraction) -> Fraction:
    """Nonzero values rounded away from zero to a multiple of 1n (ParseQuantity's rule)."""
    scaled = value * _NANO
    if scaled.denominator == 1:
        return value
    magnitude = math.ceil(abs(scaled))
    return Fraction(magnitude if value > 0 else -magnitude, _NANO)
