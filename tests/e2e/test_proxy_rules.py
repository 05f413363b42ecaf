"""The golden rulesets the unit tests pin (tests/unit/net/golden) are accepted by the
kernel's nftables as they are, applied twice (the second replaces the first in one
transaction), and the removal script leaves no table; in a namespace this test creates."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from k8py.net import servicerules
from tests.e2e import netns

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"),
                                 reason="needs root and nftables")]
GOLDEN = os.path.join(os.path.dirname(__file__), "..", "unit", "net", "golden")


@pytest.mark.parametrize("name", ["mixed.nft", "empty.nft"])
def test_golden_rulesets_apply_and_go(name):
    with open(os.path.join(GOLDEN, name), encoding="utf-8") as f:
        script = f.read()
    with netns.created() as ns:
        def nft(*args: str, script: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run([*netns.nsenter(ns), "nft", *args], input=script,
                                  capture_output=True, text=True)
        for _ in range(2):
            applied = nft("-f", "-", script=script)
            assert applied.returncode == 0, applied.stderr
        assert "table ip k8py" in nft("list", "tables").stdout
        assert nft("-f", "-", script=servicerules.removal()).returncode == 0
        assert "k8py" not in nft("list", "tables").stdout
