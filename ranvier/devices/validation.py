"""Checks of uploaded key objects (pure: data in, typed error or data out).

CS "End-to-End Encryption" > "Device keys": ``user_id`` and ``device_id`` must be the uploader's, and the
object must be signed by the device's own ``ed25519:<device_id>`` key. "Cross-signing": the self-signing
and user-signing keys must be signed by the master key (the master key's own signatures, by the user's
devices, are optional); every cross-signing key has exactly one ed25519 key, ``ed25519:<public key>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..protocol.errors import SignatureError
from ..protocol.signing import decode_verify_key, verify_json_signature


class KeyError_(Exception):
    """An uploaded key object is invalid; ``errcode`` says how (the HTTP edge makes it a 400)."""

    def __init__(self, message: str, errcode: str = "M_INVALID_PARAM") -> None:
        super().__init__(message)
        self.message = message
        self.errcode = errcode


def check_device_keys(keys: Any, user_id: str, device_id: str) -> dict[str, Any]:
    if not isinstance(keys, dict):
        raise KeyError_("device_keys must be an object", "M_BAD_JSON")
    if keys.get("user_id") != user_id:
        raise KeyError_("device_keys.user_id must be the uploading user")
    if keys.get("device_id") != device_id:
        raise KeyError_("device_keys.device_id must be the uploading device")
    algorithms = keys.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise KeyError_("device_keys.algorithms must be a list of strings", "M_BAD_JSON")
    key_map = keys.get("keys")
    if not isinstance(key_map, dict) or not all(isinstance(v, str) for v in key_map.values()):
        raise KeyError_("device_keys.keys must map key ids to strings", "M_BAD_JSON")
    ed_key = key_map.get(f"ed25519:{device_id}")
    if not isinstance(ed_key, str):
        raise KeyError_(f"device_keys.keys lacks ed25519:{device_id}")
    verify(keys, user_id, f"ed25519:{device_id}", ed_key, "device_keys")
    return keys


def verify(obj: Mapping[str, Any], signer: str, key_id: str, public_key: str, what: str) -> None:
    try:
        verify_json_signature(obj, signer, key_id, decode_verify_key(public_key))
    except SignatureError as e:
        raise KeyError_(f"{what}: {e.message}", "M_INVALID_SIGNATURE") from None


def split_key_id(key_id: Any) -> tuple[str, str]:
    """``algorithm:id`` -> (algorithm, id)."""
    if not isinstance(key_id, str) or ":" not in key_id:
        raise KeyError_(f"invalid key id {key_id!r}")
    algorithm, _, ident = key_id.partition(":")
    if not algorithm or not ident:
        raise KeyError_(f"invalid key id {key_id!r}")
    return algorithm, ident


def check_one_time_keys(
    keys: Any, user_id: str, device_id: str, ed_key: str | None, what: str
) -> list[tuple[str, str, Any]]:
    """(algorithm, key id, key) of a one_time_keys or fallback_keys map. Signed keys (an object) must
    carry a valid signature of the device when its ed25519 key is known."""
    if not isinstance(keys, dict):
        raise KeyError_(f"{what} must be an object", "M_BAD_JSON")
    out: list[tuple[str, str, Any]] = []
    for full_id, key in keys.items():
        algorithm, ident = split_key_id(full_id)
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str):
                raise KeyError_(f"{what}[{full_id}].key must be a string", "M_BAD_JSON")
            if ed_key is not None:
                verify(key, user_id, f"ed25519:{device_id}", ed_key, f"{what}[{full_id}]")
        elif not isinstance(key, str):
            raise KeyError_(f"{what}[{full_id}] must be a string or an object", "M_BAD_JSON")
        out.append((algorithm, ident, key))
    return out


def cross_signing_public_key(key: Any, user_id: str, usage: str) -> str:
    """The ed25519 public key of a cross-signing key object, after checking its shape."""
    if not isinstance(key, dict):
        raise KeyError_(f"{usage} key must be an object", "M_BAD_JSON")
    if key.get("user_id") != user_id:
        raise KeyError_(f"{usage} key: user_id must be {user_id}")
    usages = key.get("usage")
    if not isinstance(usages, list) or usage not in usages:
        raise KeyError_(f"{usage} key: usage must include {usage!r}")
    key_map = key.get("keys")
    if not isinstance(key_map, dict) or len(key_map) != 1:
        raise KeyError_(f"{usage} key must have exactly one key")
    ((key_id, public),) = key_map.items()
    if not isinstance(public, str) or key_id != f"ed25519:{public}":
        raise KeyError_(f"{usage} key: the key id must be ed25519:<public key>")
    try:
        decode_verify_key(public)
    except SignatureError as e:
        raise KeyError_(f"{usage} key: {e.message}") from None
    return public
