import pytest

from k8py.api import quantity


@pytest.mark.parametrize("text,cpu", [("100m", 100), ("1", 1000), ("0.5", 500), ("2.0001", 2001),
                                      ("1e3", 1_000_000), ("250m", 250)])
def test_cpu_in_millicores(text, cpu):
    assert quantity.amount("cpu", text) == cpu


@pytest.mark.parametrize("text,value", [("128Mi", 128 * 2 ** 20), ("1G", 10 ** 9),
                                        ("1.5Gi", 3 * 2 ** 29), ("110", 110), ("1k", 1000),
                                        ("12e6", 12_000_000)])
def test_base_units(text, value):
    assert quantity.amount("memory", text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "10MB", "--1"])
def test_garbage_is_refused(text):
    with pytest.raises(ValueError):
        quantity.parse(text)
