"""Values encrypted at rest: upstream's storage transformers, byte for byte
(`k8s.io/apiserver/pkg/storage/value`: `encrypt/aes`, `encrypt/secretbox`, `encrypt/identity`).

A transformer turns the bytes the API server would store into the bytes the store holds
(`to_storage`) and back (`from_storage`). What the store holds, per provider:

    aescbc     k8s:enc:aescbc:v1:<key name>:    + 16-byte IV + AES-CBC(PKCS#7-padded value)
    aesgcm     k8s:enc:aesgcm:v1:<key name>:    + 12-byte nonce + AES-GCM(value) + 16-byte tag,
                                                  with the store key as additional data
    secretbox  k8s:enc:secretbox:v1:<key name>: + 24-byte nonce + XSalsa20-Poly1305 (tag first)
    identity   the value itself; refuses to read anything starting with `k8s:enc:`

Nonces and IVs are random per write. The additional data of AES-GCM is the object's store key
(`/registry/<group>/<plural>/<namespace>/<name>`): a value copied under another key does not
open, as upstream binds it to the etcd key. AES-CBC authenticates nothing (as upstream, whose
documentation says so): only AES-GCM and secretbox detect tampering.

`PrefixTransformers` is upstream's `prefixTransformers`: the first transformer writes (its
prefix in front); a read tries, in order, every transformer whose prefix the value starts
with, skipping errors of the empty-prefix identity (so `identity` listed first still lets a
later provider read encrypted values), and answers the first success. A read by any but the
first transformer is *stale*: the value should be written again with the first (the
re-encryption after a key rotation looks at this). A provider with several keys is itself a
`PrefixTransformers` over `<key name>:` prefixes. Error messages are upstream's.
"""

from __future__ import annotations

import os
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM as _AESGCM

ENCRYPTED_PREFIX = b"k8s:enc:"
AESCBC_PREFIX = b"k8s:enc:aescbc:v1:"
AESGCM_PREFIX = b"k8s:enc:aesgcm:v1:"
SECRETBOX_PREFIX = b"k8s:enc:secretbox:v1:"

_BLOCK = 16  # AES block size
_GCM_NONCE = 12
_SECRETBOX_NONCE = 24
_SECRETBOX_OVERHEAD = 16  # the Poly1305 tag


class TransformError(Exception):
    """A stored value that cannot be read (wrong key, damaged, tampered with), or a value
    that cannot be written."""


class Transformer(Protocol):
    def from_storage(self, data: bytes, context: bytes) -> tuple[bytes, bool]:
        """(the value, whether it is stale: written by other than the first transformer).
        `context` is the store key. Raises TransformError."""

    def to_storage(self, data: bytes, context: bytes) -> bytes: ...


class Identity:
    """Values as they are; encrypted values are refused (upstream's EncryptCheckTransformer)."""

    def from_storage(self, data: bytes, context: bytes) -> tuple[bytes, bool]:
        if data.startswith(ENCRYPTED_PREFIX):
            raise TransformError("identity transformer tried to read encrypted data")
        return data, False

    def to_storage(self, data: bytes, context: bytes) -> bytes:
        return data


class AESCBC:
    """AES-CBC with a random IV and PKCS#7 padding; unauthenticated."""

    def __init__(self, key: bytes):
        self._algorithm = algorithms.AES(key)

    def from_storage(self, data: bytes, context: bytes) -> tuple[bytes, bool]:
        if len(data) < _BLOCK:
            raise TransformError("the stored data was shorter than the required size")
        iv, body = data[:_BLOCK], data[_BLOCK:]
        if len(body) % _BLOCK:
            raise TransformError("the stored data is not a multiple of the block size")
        decryptor = Cipher(self._algorithm, modes.CBC(iv)).decryptor()
        result = decryptor.update(body) + decryptor.finalize()
        # upstream's checks, in its order: a pad length of 0 or longer than the data, then
        # every pad byte equal to it
        pad = result[-1] if result else 0
        if pad == 0 or pad > len(result):
            raise TransformError("invalid PKCS7 data (empty or not padded)")
        if result[-pad:] != bytes((pad,)) * pad:
            raise TransformError("invalid padding on input")
        return result[:-pad], False

    def to_storage(self, data: bytes, context: bytes) -> bytes:
        pad = _BLOCK - len(data) % _BLOCK
        iv = os.urandom(_BLOCK)
        encryptor = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        return iv + encryptor.update(data + bytes((pad,)) * pad) + encryptor.finalize()


class AESGCM:
    """AES-GCM with a random 12-byte nonce; the store key is the additional data."""

    def __init__(self, key: bytes):
        self._aead = _AESGCM(key)

    def from_storage(self, data: bytes, context: bytes) -> tuple[bytes, bool]:
        if len(data) < _GCM_NONCE:
            raise TransformError("the stored data was shorter than the required size")
        try:
            return self._aead.decrypt(data[:_GCM_NONCE], data[_GCM_NONCE:], context), False
        except InvalidTag:
            raise TransformError("cipher: message authentication failed") from None

    def to_storage(self, data: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_GCM_NONCE)
        return nonce + self._aead.encrypt(nonce, data, context)


class Secretbox:
    """NaCl secretbox (XSalsa20-Poly1305) with a random 24-byte nonce in front."""

    def __init__(self, key: bytes):
        from nacl.secret import SecretBox  # PyNaCl: only servers that use secretbox load it

        self._box = SecretBox(key)

    def from_storage(self, data: bytes, context: bytes) -> tuple[bytes, bool]:
        from nacl.exceptions import CryptoError

        if len(data) < _SECRETBOX_OVERHEAD + _SECRETBOX_NONCE:
            raise TransformError("the stored data was shorter than the required size")
        try:
            return self._box.decrypt(data[_SECRETBOX_NONCE:], data[:_SECRETBOX_NONCE]), False
        except CryptoError:
            # upstream's words for a failed open, whatever the cause
            raise TransformError("output array was not large enough for encryption") from None

    def to_storage(self, data: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_SECRETBOX_NONCE)
        return nonce + self._box.encrypt(data, nonce).ciphertext


class PrefixTransformers:
    """Transformers by prefix: the first writes, reads take the first that succeeds."""

    def __init__(self, transformers: list[tuple[bytes, Transformer]], no_match: str):
        if not transformers:
            raise ValueError("at least one transformer is required")
        self.transformers = transformers
        self._no_match = no_match

    def from_storage(self, data: bytes, context: bytes) -> tuple[bytes, bool]:
        failures: list[str] = []
        for i, (prefix, transformer) in enumerate(self.transformers):
            if not data.startswith(prefix):
                continue
            try:
                result, stale = transformer.from_storage(data[len(prefix):], context)
            except TransformError as exc:
                # identity (no prefix) fails on encrypted data: a later provider reads it;
                # two providers may share a prefix (one rotated to, one away from)
                if prefix and str(exc) not in failures:
                    failures.append(str(exc))
                continue
            return result, stale or i != 0
        if failures:
            # upstream's aggregate: one error alone, several (distinct) as [a, b]
            raise TransformError(failures[0] if len(failures) == 1
                                 else "[" + ", ".join(failures) + "]")
        raise TransformError(self._no_match)

    def to_storage(self, data: bytes, context: bytes) -> bytes:
        prefix, transformer = self.transformers[0]
        return prefix + transformer.to_storage(data, context)

    @property
    def writes_prefix(self) -> bytes:
        """What every value this writes starts with (for the encrypting providers: the
        provider's and its first key's name)."""
        prefix, transformer = self.transformers[0]
        if isinstance(transformer, PrefixTransformers):
            return prefix + transformer.writes_prefix
        return prefix


def keyed(provider_prefix: bytes, keys: list[tuple[str, Transformer]], no_match: str
          ) -> tuple[bytes, PrefixTransformers]:
    """A provider with its keys, as one entry of a resource's PrefixTransformers."""
    return provider_prefix, PrefixTransformers(
        [(name.encode() + b":", transformer) for name, transformer in keys], no_match)
