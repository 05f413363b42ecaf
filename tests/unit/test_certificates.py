"""When certificates are renewed (the start rule, the running deadline), how long new ones
live (the test knob), and how their files are written."""

from __future__ import annotations

import datetime
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from k8py import certificates

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)


def cert(days: float = 365, seconds: float = 0, start: datetime.datetime = T0
         ) -> x509.Certificate:
    key = certificates.new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days, seconds=seconds))
            .sign(key, hashes.SHA256()))


@pytest.fixture(autouse=True)
def no_knobs(monkeypatch):
    for name in (certificates.VALIDITY_SECONDS_ENV, certificates.VALIDITY_DAYS_ENV,
                 certificates.RENEW_DAYS_ENV):
        monkeypatch.delenv(name, raising=False)


def test_leaf_validity_defaults_to_a_year_and_takes_the_knobs(monkeypatch):
    assert certificates.leaf_validity() == datetime.timedelta(days=365)
    monkeypatch.setenv(certificates.VALIDITY_DAYS_ENV, "30")  # k3s's variable
    assert certificates.leaf_validity() == datetime.timedelta(days=30)
    monkeypatch.setenv(certificates.VALIDITY_SECONDS_ENV, "25")  # seconds win
    assert certificates.leaf_validity() == datetime.timedelta(seconds=25)
    monkeypatch.setenv(certificates.VALIDITY_SECONDS_ENV, "-1")
    with pytest.raises(ValueError, match="must be positive"):
        certificates.leaf_validity()
    monkeypatch.setenv(certificates.VALIDITY_SECONDS_ENV, "soon")
    with pytest.raises(ValueError, match="is not a number"):
        certificates.leaf_validity()


def test_start_rule_is_k3s_90_days_capped_at_30_percent(monkeypatch):
    year = cert(365)
    assert certificates.renew_window(year) == datetime.timedelta(days=90)
    assert not certificates.due(year, T0 + datetime.timedelta(days=274))
    assert certificates.due(year, T0 + datetime.timedelta(days=276))  # 89 days left
    short = cert(0, seconds=100)
    assert certificates.renew_window(short) == datetime.timedelta(seconds=30)
    assert not certificates.due(short, T0 + datetime.timedelta(seconds=69))
    assert certificates.due(short, T0 + datetime.timedelta(seconds=71))
    monkeypatch.setenv(certificates.RENEW_DAYS_ENV, "10")
    assert certificates.renew_window(year) == datetime.timedelta(days=10)


def test_running_deadline_is_70_to_90_percent_and_never_after_the_start_rule():
    short = cert(0, seconds=100)
    assert certificates.rotation_deadline(short, 0.7) == T0 + datetime.timedelta(seconds=70)
    # 90% would be later than the start rule's 70%: the start rule wins
    assert certificates.rotation_deadline(short, 0.9) == T0 + datetime.timedelta(seconds=70)
    year = cert(365)
    assert certificates.rotation_deadline(year, 0.7) == T0 + datetime.timedelta(days=255.5)
    assert certificates.rotation_deadline(year, 0.9) == T0 + datetime.timedelta(days=275)
    for _ in range(200):  # jittered within upstream's bounds
        deadline = certificates.rotation_deadline(year)
        assert T0 + datetime.timedelta(days=255.5) <= deadline <= T0 + datetime.timedelta(
            days=275)
    assert certificates.seconds_until(T0, T0 + datetime.timedelta(seconds=5)) == 0.0
    assert certificates.seconds_until(T0 + datetime.timedelta(seconds=5), T0) == 5.0


def test_write_private_is_atomic_and_owner_only(tmp_path):
    path = str(tmp_path / "x.key")
    old_umask = os.umask(0)
    try:
        certificates.write_private(path, b"one")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        inode = os.stat(path).st_ino
        certificates.write_private(path, b"two")
        assert open(path, "rb").read() == b"two"
        assert os.stat(path).st_ino != inode  # replaced by rename, never rewritten in place
        certificates.write_private(path, b"three", 0o644)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    finally:
        os.umask(old_umask)
    assert sorted(os.listdir(tmp_path)) == ["x.key"]  # no temporary file left behind


def test_write_private_leaves_the_old_file_when_it_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "x.crt")
    certificates.write_private(path, b"old")

    def broken(fd, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "write", broken)
    with pytest.raises(OSError):
        certificates.write_private(path, b"new")
    monkeypatch.undo()
    assert open(path, "rb").read() == b"old"
    assert os.listdir(tmp_path) == ["x.crt"]


def test_chains_and_bundles_are_read_whole(tmp_path):
    leaf, ca = cert(1), cert(3650)
    path = str(tmp_path / "chain.crt")
    certificates.write_private(path, certificates.pem(leaf, ca))
    assert certificates.load_certificates(path) == [leaf, ca]
    assert certificates.load_certificate(path) == leaf
