"""The certificate files of a data dir: what `k8py certificate check` reports, what `rotate`
backs up and removes, and the CA rotation's overlap (peers holding only the old CA still
verify the new leaves; the server trusts both CAs; then the old CA goes)."""

from __future__ import annotations

import datetime
import os
import ssl
import stat

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from k8py import certificates
from k8py.cli import cli
from k8py.server import certfiles, pki

SERVER_DIR = "server"


def make(data_dir) -> pki.PKI:
    return pki.ensure_pki(os.path.join(data_dir, SERVER_DIR), cluster_domain="cluster.local",
                          service_ip="10.43.0.1", token="sekrit")


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """A TLS handshake in memory; the client's side, or ssl.SSLError."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(20):
        for i, (side, out, other_in) in enumerate(((client_side, c_out, s_in),
                                                   (server_side, s_out, c_in))):
            if not done[i]:
                try:
                    side.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            other_in.write(out.read())
        if all(done):
            return client_side
    raise AssertionError("handshake did not finish")


def client_context(cafile: str, cert: str | None = None, key: str | None = None):
    context = ssl.create_default_context(cafile=cafile)
    if cert:
        context.load_cert_chain(cert, key)
    return context


def server_context(p: pki.PKI) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=p.ca_cert)
    context.load_cert_chain(p.serving_cert, p.serving_key)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.fixture(autouse=True)
def no_knobs(monkeypatch):
    for name in (certificates.VALIDITY_SECONDS_ENV, certificates.VALIDITY_DAYS_ENV,
                 certificates.RENEW_DAYS_ENV):
        monkeypatch.delenv(name, raising=False)


def test_check_lists_every_certificate_with_k3s_status(tmp_path, monkeypatch):
    p = make(tmp_path)
    pki.ensure_kubelet_client(p)
    found = {c.filename: c for c in certfiles.check(str(tmp_path))}
    assert set(found) == {"server-ca.crt", "client-admin.crt", "serving.crt",
                          "client-kube-apiserver.crt"}
    assert found["serving.crt"].usages == ("ServerAuth",)
    assert found["client-admin.crt"].usages == ("ClientAuth",)
    assert found["server-ca.crt"].usages == ("CertSign",)
    assert {c.status for c in found.values()} == {"OK"}
    assert found["client-admin.crt"].subject == "system:admin"
    assert found["client-admin.crt"].issuer == found["server-ca.crt"].subject
    later = certificates.now() + datetime.timedelta(days=300)
    assert {c.filename: c.status for c in certfiles.check(str(tmp_path), at=later)} == {
        "server-ca.crt": "OK", "client-admin.crt": "WARNING", "serving.crt": "WARNING",
        "client-kube-apiserver.crt": "WARNING"}
    much_later = certificates.now() + datetime.timedelta(days=400)
    assert certfiles.check(str(tmp_path), ("admin",), at=much_later)[0].status == "EXPIRED"

    runner = CliRunner()
    table = runner.invoke(cli, ["certificate", "check", "-d", str(tmp_path), "-o", "table"])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split() == ["FILENAME", "SUBJECT", "USAGES", "EXPIRES", "RESIDUAL",
                                "TIME", "STATUS"]
    assert any(line.startswith("serving.crt") and line.endswith("OK") for line in lines)
    text = runner.invoke(cli, ["certificate", "check", "-d", str(tmp_path), "-s", "admin"])
    assert text.output.startswith("client-admin.crt: certificate system:admin (ClientAuth) "
                                  "is ok, expires at ")
    bad = runner.invoke(cli, ["certificate", "check", "-d", str(tmp_path), "-s", "etcd"])
    assert bad.exit_code == 2 and "'etcd' is not one of" in bad.output


def test_start_renews_due_leaves_and_keeps_fresh_ones(tmp_path, monkeypatch):
    p = make(tmp_path)
    admin = certificates.load_certificate(p.admin_cert)
    make(tmp_path)
    assert certificates.load_certificate(p.admin_cert) == admin  # fresh: reused
    later = certificates.now() + datetime.timedelta(days=300)  # 65 days left: due
    monkeypatch.setattr(certificates, "now", lambda: later)
    make(tmp_path)
    renewed = certificates.load_certificate(p.admin_cert)
    assert renewed.serial_number != admin.serial_number
    assert stat.S_IMODE(os.stat(p.admin_key).st_mode) == 0o600


def test_short_validity_knob_applies_to_every_leaf(tmp_path, monkeypatch):
    monkeypatch.setenv(certificates.VALIDITY_SECONDS_ENV, "30")
    p = make(tmp_path)
    for path in (p.serving_cert, p.admin_cert):
        cert = certificates.load_certificate(path)
        assert certificates.lifetime(cert) == datetime.timedelta(seconds=33)  # 3 s backdated
    ca = certificates.load_certificate(p.ca_cert)
    assert certificates.lifetime(ca) > datetime.timedelta(days=3000)


def test_rotate_backs_up_and_removes_the_leaves(tmp_path):
    p = make(tmp_path)
    result = CliRunner().invoke(cli, ["certificate", "rotate", "-d", str(tmp_path),
                                      "-s", "admin"])
    assert result.exit_code == 0, result.output
    assert not os.path.exists(p.admin_cert) and not os.path.exists(p.admin_key)
    assert os.path.exists(p.serving_cert) and os.path.exists(p.ca_key)
    backups = [d for d in os.listdir(tmp_path / SERVER_DIR) if d.startswith("tls-")]
    assert len(backups) == 1
    assert os.path.exists(tmp_path / SERVER_DIR / backups[0] / "client-admin.crt")
    make(tmp_path)  # the next start issues it again
    assert os.path.exists(p.admin_cert)


def test_ca_rotation_overlaps_then_drops_the_old_ca(tmp_path):
    p = make(tmp_path)
    old_ca = str(tmp_path / "old-ca.crt")
    with open(old_ca, "wb") as f:
        f.write(pki.ca_pem(p))
    old_token = pki.read_token(p)
    old_admin = (str(tmp_path / "old-admin.crt"), str(tmp_path / "old-admin.key"))
    for src, dst in zip((p.admin_cert, p.admin_key), old_admin):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())

    certfiles.rotate_ca(str(tmp_path))
    with pytest.raises(certfiles.CertificateError, match="already under way"):
        certfiles.rotate_ca(str(tmp_path))
    make(tmp_path)  # the server starts: new leaves from the new CA
    bundle = certificates.load_certificates(p.ca_cert)
    assert len(bundle) == 2 and bundle[1] == certificates.load_certificate(old_ca)
    serving_chain = certificates.load_certificates(p.serving_cert)
    assert serving_chain[0].issuer == bundle[0].subject
    serving_chain[0].verify_directly_issued_by(bundle[0])
    # the join token: the same secret, the new bundle's hash
    token = pki.read_token(p)
    assert token != old_token and token.endswith("::server:sekrit")
    assert token == f"K10{pki.ca_hash(p)}::server:sekrit"

    server = server_context(p)
    # a peer that knows only the old CA, with the old admin certificate, still gets in
    handshake(server, client_context(old_ca, *old_admin))
    # one that took the new bundle, with a new admin certificate, too
    handshake(server, client_context(p.ca_cert, p.admin_cert, p.admin_key))
    # what the CSR signer issues carries the cross-signed CA too
    key = certificates.new_key()
    request = x509.CertificateSigningRequestBuilder().subject_name(
        pki.node_name("n1")).sign(key, hashes.SHA256())
    issued = x509.load_pem_x509_certificates(pki.sign_request(
        p.ca_cert, p.ca_key, request, server=False, seconds=600))
    assert issued[1] == certificates.load_certificate(p.ca_cross)
    assert issued[1].issuer == bundle[1].subject and issued[1].subject == bundle[0].subject

    certfiles.finish_ca_rotation(str(tmp_path))
    make(tmp_path)
    assert len(certificates.load_certificates(p.ca_cert)) == 1
    assert len(certificates.load_certificates(p.serving_cert)) == 1  # no cross link
    server = server_context(p)
    handshake(server, client_context(p.ca_cert, p.admin_cert, p.admin_key))
    with pytest.raises(ssl.SSLError):  # the old CA's peers are out now
        handshake(server, client_context(old_ca, *old_admin))
    with pytest.raises(certfiles.CertificateError, match="no CA rotation"):
        certfiles.finish_ca_rotation(str(tmp_path))
