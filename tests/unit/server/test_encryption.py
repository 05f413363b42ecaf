"""The storage transformers (`encryption`): round trips, upstream's stored format checked
with independent implementations of each cipher, wrong keys and damaged values refused with
upstream's messages, and the prefix rules (first writes, all read, identity skipped)."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.secret import SecretBox

from k8py.api.resources import builtin
from k8py.server.apiserver import encryptionconfig
from k8py.server.apiserver.encryption import TransformError

SECRETS = builtin("v1", "secrets")
KEY = b"/registry/core/secrets/default/s1"
VALUE = b'{"kind":"Secret","apiVersion":"v1","data":{"password":"aHVudGVyMg=="}}'


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def transformer(*providers: str):
    """The secrets transformer of a config listing `providers` (YAML flow mappings)."""
    listed = "".join(f"  - {p}\n" for p in providers)
    config = encryptionconfig.parse(
        ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
         f"resources:\n- resources: [secrets]\n  providers:\n{listed}").encode())
    return config.transformer(SECRETS)


def keys(kind: str, *named: tuple[str, bytes]) -> str:
    listed = ", ".join(f"{{name: '{n}', secret: '{b64(k)}'}}" for n, k in named)
    return f"{kind}: {{keys: [{listed}]}}"


K1, K2 = os.urandom(32), os.urandom(32)


@pytest.mark.parametrize("kind", ["aescbc", "aesgcm", "secretbox"])
def test_round_trip_and_prefix(kind):
    t = transformer(keys(kind, ("key1", K1)), "identity: {}")
    stored = t.to_storage(VALUE, KEY)
    assert stored.startswith(f"k8s:enc:{kind}:v1:key1:".encode())
    assert VALUE not in stored and b"aHVudGVyMg" not in stored
    assert t.from_storage(stored, KEY) == (VALUE, False)
    assert t.to_storage(VALUE, KEY) != stored  # a fresh IV or nonce every time


def test_aescbc_format_is_iv_then_pkcs7_cbc():
    stored = transformer(keys("aescbc", ("k", K1))).to_storage(VALUE, KEY)
    body = stored[len(b"k8s:enc:aescbc:v1:k:"):]
    iv, ciphertext = body[:16], body[16:]
    assert len(ciphertext) == (len(VALUE) // 16 + 1) * 16
    decryptor = Cipher(algorithms.AES(K1), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    assert unpadder.update(padded) + unpadder.finalize() == VALUE


def test_aesgcm_format_is_nonce_then_sealed_with_the_key_as_additional_data():
    stored = transformer(keys("aesgcm", ("k", K1))).to_storage(VALUE, KEY)
    body = stored[len(b"k8s:enc:aesgcm:v1:k:"):]
    assert len(body) == 12 + len(VALUE) + 16
    assert AESGCM(K1).decrypt(body[:12], body[12:], KEY) == VALUE


def test_secretbox_format_is_nonce_then_box():
    stored = transformer(keys("secretbox", ("k", K1))).to_storage(VALUE, KEY)
    body = stored[len(b"k8s:enc:secretbox:v1:k:"):]
    assert len(body) == 24 + 16 + len(VALUE)
    assert SecretBox(K1).decrypt(body[24:], body[:24]) == VALUE


def test_values_written_by_other_implementations_are_read():
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(K1), modes.CBC(iv)).encryptor()
    cbc = b"k8s:enc:aescbc:v1:k:" + iv + encryptor.update(
        padder.update(VALUE) + padder.finalize()) + encryptor.finalize()
    nonce = os.urandom(12)
    gcm = b"k8s:enc:aesgcm:v1:k:" + nonce + AESGCM(K1).encrypt(nonce, VALUE, KEY)
    box = b"k8s:enc:secretbox:v1:k:" + bytes(SecretBox(K1).encrypt(VALUE))  # nonce first
    t = transformer(keys("aescbc", ("k", K1)), keys("aesgcm", ("k", K1)),
                    keys("secretbox", ("k", K1)))
    assert t.from_storage(cbc, KEY) == (VALUE, False)
    assert t.from_storage(gcm, KEY) == (VALUE, True)  # read, but not by the writer
    assert t.from_storage(box, KEY) == (VALUE, True)


@pytest.mark.parametrize("kind, message", [
    ("aescbc", "no matching key was found for the provided AES transformer"),
    ("aesgcm", "no matching key was found for the provided AES transformer"),
    ("secretbox", "no matching key was found for the provided Secretbox transformer"),
])
def test_a_key_not_configured_is_refused(kind, message):
    stored = transformer(keys(kind, ("old", K1))).to_storage(VALUE, KEY)
    with pytest.raises(TransformError, match=message):
        transformer(keys(kind, ("new", K2)), "identity: {}").from_storage(stored, KEY)


@pytest.mark.parametrize("kind, messages", [
    ("aescbc", ("invalid padding on input", "invalid PKCS7 data (empty or not padded)")),
    ("aesgcm", ("cipher: message authentication failed",)),
    ("secretbox", ("output array was not large enough for encryption",)),
])
def test_the_same_name_with_another_secret_is_refused(kind, messages):
    stored = transformer(keys(kind, ("k", K1))).to_storage(VALUE, KEY)
    for _ in range(20):  # a wrong AES-CBC key passes the padding check 1 time in ~256
        try:
            plain, _ = transformer(keys(kind, ("k", K2))).from_storage(stored, KEY)
        except TransformError as exc:
            assert str(exc) in messages
            continue
        assert plain != VALUE
        stored = transformer(keys(kind, ("k", K1))).to_storage(VALUE, KEY)


@pytest.mark.parametrize("kind", ["aesgcm", "secretbox"])
def test_tampering_is_detected_by_the_authenticated_ciphers(kind):
    t = transformer(keys(kind, ("k", K1)))
    stored = bytearray(t.to_storage(VALUE, KEY))
    stored[-5] ^= 1
    with pytest.raises(TransformError):
        t.from_storage(bytes(stored), KEY)
    with pytest.raises(TransformError, match="shorter than the required size"):
        t.from_storage(f"k8s:enc:{kind}:v1:k:".encode() + b"short", KEY)


def test_aesgcm_binds_the_value_to_its_key():
    t = transformer(keys("aesgcm", ("k", K1)))
    with pytest.raises(TransformError, match="message authentication failed"):
        t.from_storage(t.to_storage(VALUE, KEY), b"/registry/core/secrets/default/other")


def test_aescbc_damage_is_refused_with_upstreams_messages():
    t = transformer(keys("aescbc", ("k", K1)))
    stored = t.to_storage(VALUE, KEY)
    with pytest.raises(TransformError, match="not a multiple of the block size"):
        t.from_storage(stored[:-1], KEY)
    with pytest.raises(TransformError, match="shorter than the required size"):
        t.from_storage(b"k8s:enc:aescbc:v1:k:" + b"x" * 5, KEY)


def test_identity_writes_plaintext_and_never_reads_encrypted_data():
    t = transformer("identity: {}")
    assert t.to_storage(VALUE, KEY) == VALUE
    assert t.from_storage(VALUE, KEY) == (VALUE, False)
    with pytest.raises(TransformError, match="no matching prefix found"):
        t.from_storage(b"k8s:enc:aescbc:v1:k:" + b"\0" * 32, KEY)


def test_identity_first_still_reads_encrypted_values_and_marks_them_stale():
    encrypted = transformer(keys("aescbc", ("k", K1))).to_storage(VALUE, KEY)
    t = transformer("identity: {}", keys("aescbc", ("k", K1)))
    assert t.to_storage(VALUE, KEY) == VALUE  # writes in the clear: encryption turned off
    assert t.from_storage(encrypted, KEY) == (VALUE, True)


def test_plaintext_without_identity_is_refused():
    with pytest.raises(TransformError, match="^no matching prefix found$"):
        transformer(keys("aescbc", ("k", K1))).from_storage(VALUE, KEY)


def test_any_key_of_a_provider_reads_and_only_the_first_writes():
    old = transformer(keys("aescbc", ("old", K1))).to_storage(VALUE, KEY)
    t = transformer(keys("aescbc", ("new", K2), ("old", K1)))
    assert t.from_storage(old, KEY) == (VALUE, True)
    assert t.to_storage(VALUE, KEY).startswith(b"k8s:enc:aescbc:v1:new:")
    assert t.writes_prefix == b"k8s:enc:aescbc:v1:new:"


def test_two_providers_of_one_kind_are_both_tried():
    old = transformer(keys("aescbc", ("k", K1))).to_storage(VALUE, KEY)
    t = transformer(keys("aescbc", ("k2", K2)), keys("aescbc", ("k", K1)))
    assert t.from_storage(old, KEY) == (VALUE, True)
