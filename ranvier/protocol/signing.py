"""Server signing keys and JSON signatures (appendix "Signing JSON", "Checking for a Signature").

Signing and verifying go straight to PyNaCl: it releases the GIL, so verification can be spread over a
thread pool by the caller.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
from unpaddedbase64 import decode_base64, encode_base64

from .canonical_json import encode_canonical_json
from .errors import SignatureError

ED25519 = "ed25519"


@dataclass(frozen=True)
class SigningKey:
    """An ed25519 key with its key id (``ed25519:<version>``)."""

    version: str
    key: nacl.signing.SigningKey

    @property
    def key_id(self) -> str:
        return f"{ED25519}:{self.version}"

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        return self.key.verify_key

    @property
    def public_key_base64(self) -> str:
        return encode_base64(bytes(self.key.verify_key))

    @classmethod
    def generate(cls, version: str) -> SigningKey:
        return cls(version, nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, version: str, seed: bytes) -> SigningKey:
        return cls(version, nacl.signing.SigningKey(seed))

    def to_file_line(self) -> str:
        """The one-line format Synapse and signedjson use for key files: ``ed25519 <version> <seed>``."""
        return f"{ED25519} {self.version} {encode_base64(bytes(self.key))}"

    @classmethod
    def from_file_line(cls, line: str) -> SigningKey:
        parts = line.split()
        if len(parts) != 3 or parts[0] != ED25519:
            raise ValueError("signing key line must be 'ed25519 <version> <base64 seed>'")
        return cls.from_seed(parts[1], decode_base64(parts[2]))

    def sign_bytes(self, message: bytes) -> str:
        return encode_base64(self.key.sign(message).signature)


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def decode_unpadded_base64(text: str) -> bytes:
    """``unpaddedbase64.decode_base64`` (standard or URL-safe alphabet, padding optional), faster.

    On the hot path of every signature and content-hash check; raises ``binascii.Error`` or ``ValueError``
    on input that is not base64.
    """
    if "-" in text or "_" in text:
        text = text.translate(_URLSAFE_TO_STANDARD)
    return binascii.a2b_base64(text + "=" * (-len(text) % 4))


def decode_verify_key(key_base64: str) -> nacl.signing.VerifyKey:
    try:
        return nacl.signing.VerifyKey(decode_base64(key_base64))
    except Exception as e:  # bad base64 or wrong length: both mean an unusable key
        raise SignatureError(f"malformed verify key: {e}") from e


def _signable(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def compute_signature(obj: Mapping[str, Any], key: SigningKey) -> str:
    return key.sign_bytes(encode_canonical_json(_signable(obj)))


def sign_json(obj: dict[str, Any], server_name: str, key: SigningKey) -> dict[str, Any]:
    """Add our signature to ``obj`` in place (keeping others' signatures) and return it."""
    signature = compute_signature(obj, key)
    sigs = obj.setdefault("signatures", {})
    sigs.setdefault(server_name, {})[key.key_id] = signature
    return obj


def verify_signature_bytes(message: bytes, signature_b64: object, verify_key: nacl.signing.VerifyKey) -> None:
    if not isinstance(signature_b64, str):
        raise SignatureError("signature is not a string")
    try:
        signature = decode_unpadded_base64(signature_b64)
    except Exception as e:
        raise SignatureError(f"signature is not valid base64: {e}") from e
    try:
        verify_key.verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as e:
        raise SignatureError("signature does not verify") from e


def verify_json_signature(
    obj: Mapping[str, Any],
    server_name: str,
    key_id: str,
    verify_key: nacl.signing.VerifyKey,
    *,
    strict: bool = True,
) -> None:
    """Check that ``obj`` carries a valid signature of ``server_name`` by ``key_id``.

    ``strict=False`` encodes floats and big integers as ``encode_canonical_json(strict=False)`` does: for
    objects that may carry events of room versions 1-5 (a federation request's body)."""
    signature = _get_signature(obj, server_name, key_id)
    verify_signature_bytes(encode_canonical_json(_signable(obj), strict), signature, verify_key)


def _get_signature(obj: Mapping[str, Any], server_name: str, key_id: str) -> object:
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        raise SignatureError("object has no signatures")
    by_server = sigs.get(server_name)
    if not isinstance(by_server, dict):
        raise SignatureError(f"object is not signed by {server_name}")
    if key_id not in by_server:
        raise SignatureError(f"object is not signed by {server_name} with key {key_id}")
    return by_server[key_id]


def signature_key_ids(obj: Mapping[str, Any], server_name: str) -> list[str]:
    """The ed25519 key ids with which ``server_name`` signed ``obj`` (other algorithms are ignored)."""
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        return []
    by_server = sigs.get(server_name)
    if not isinstance(by_server, dict):
        return []
    return [k for k in by_server if isinstance(k, str) and k.startswith(ED25519 + ":")]
