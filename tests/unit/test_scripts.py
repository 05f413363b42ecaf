"""The shell scripts pass shellcheck and parse as POSIX sh (dash); the Vagrantfile passes
`vagrant validate` for the default lab and for more agents on arm64. (The scripts the
installer writes are linted where they are written: tests/e2e/test_install.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ["install.sh", "tests/run.sh"]


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="needs shellcheck (tests/run.sh)")
def test_shellcheck_passes():
    done = subprocess.run(["shellcheck", *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.skipif(not shutil.which("dash"), reason="needs dash")
def test_the_scripts_are_posix_sh():
    for script in SCRIPTS:
        done = subprocess.run(["dash", "-n", script], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, (script, done.stderr)


@pytest.mark.skipif(not shutil.which("vagrant"), reason="needs vagrant (tests/run.sh)")
@pytest.mark.parametrize("env", [{}, {"AGENTS": "3", "K8PY_VAGRANT_ARCH": "arm64"}])
def test_vagrantfile_validates(tmp_path, env):
    shutil.copy(os.path.join(ROOT, "vagrant", "Vagrantfile"), tmp_path)
    done = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp_path), **env})
    assert done.returncode == 0 and "validated successfully" in done.stdout, \
        done.stdout + done.stderr
