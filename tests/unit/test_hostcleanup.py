"""`k8py killall` stops only the k8py processes of its own data directory: a lab's nodes or a
second k8py on the host are left alone."""

from __future__ import annotations

import subprocess
import sys

from k8py import hostcleanup
from tests.conftest import wait_for


def test_k8py_command_lines_are_recognised():
    assert hostcleanup._k8py_arguments(["/usr/local/bin/k8py", "server", "-d", "/x"]) == \
        ["server", "-d", "/x"]
    assert hostcleanup._k8py_arguments(["/usr/bin/python3", "-m", "k8py", "agent"]) == ["agent"]
    assert hostcleanup._k8py_arguments(["/usr/bin/python3", "-m", "pytest"]) is None


def test_only_the_processes_of_the_data_dir_are_found(tmp_path):
    # stand-ins: a sleeping script named k8py, with k8py's arguments
    script = tmp_path / "k8py"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    script.chmod(0o755)

    def fake(*args):
        return subprocess.Popen([str(script), *args])
    mine = fake("server", "--data-dir", str(tmp_path / "mine"))
    other = fake("agent", f"--data-dir={tmp_path / 'other'}")
    try:
        def found(data_dir):
            return set(hostcleanup.k8py_processes(str(data_dir)))
        # both stand-ins have exec'd (until then /proc shows the forking parent's command)
        wait_for(lambda: mine.pid in found(tmp_path / "mine") and
                 other.pid in found(tmp_path / "other"), timeout=5, what="the stand-ins found")
        assert other.pid not in found(tmp_path / "mine")
        assert mine.pid not in found(tmp_path / "other")
    finally:
        for proc in (mine, other):
            proc.kill()
            proc.wait()
