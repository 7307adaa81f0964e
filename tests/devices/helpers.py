"""Test-side E2EE key material: real ed25519 signatures over canonical JSON, as a client makes them."""

from __future__ import annotations

import secrets
from typing import Any

import nacl.signing
from unpaddedbase64 import encode_base64

from ranvier.protocol.canonical_json import encode_canonical_json


def sign(obj: dict[str, Any], user_id: str, key_id: str, key: nacl.signing.SigningKey) -> dict[str, Any]:
    """Add ``user_id``'s signature by ``key_id`` to ``obj`` (in place) and return it."""
    signable = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    signature = encode_base64(key.sign(encode_canonical_json(signable)).signature)
    obj.setdefault("signatures", {}).setdefault(user_id, {})[key_id] = signature
    return obj


def public(key: nacl.signing.SigningKey) -> str:
    return encode_base64(bytes(key.verify_key))


class TestDevice:
    """A device's identity key (ed25519) plus fake curve25519 keys (the server never looks inside them)."""

    __test__ = False

    def __init__(self, user_id: str, device_id: str) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.ed = nacl.signing.SigningKey.generate()
        self._next = 0

    @property
    def ed_key_id(self) -> str:
        return f"ed25519:{self.device_id}"

    def device_keys(self) -> dict[str, Any]:
        keys = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{self.device_id}": encode_base64(secrets.token_bytes(32)),
                self.ed_key_id: public(self.ed),
            },
        }
        return sign(keys, self.user_id, self.ed_key_id, self.ed)

    def one_time_keys(self, n: int, prefix: str = "AAAA") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for _ in range(n):
            self._next += 1
            key = {"key": encode_base64(secrets.token_bytes(32))}
            out[f"signed_curve25519:{prefix}{self._next:04d}"] = sign(
                key, self.user_id, self.ed_key_id, self.ed
            )
        return out
