"""The appendix's cryptographic test vectors ("Cryptographic Test Vectors"), byte for byte.

The vectors are read from shared/spec/test-vectors.json beside the checkout (a machine-readable copy
of appendices.md, re-verified when the file was made). Per the file's note, the event vectors carry no
room version and reproduce with the v1-v10 redaction key list (which keeps ``origin``), not with v11+.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from unpaddedbase64 import decode_base64

from ranvier.protocol.canonical_json import encode_canonical_json
from ranvier.protocol.events import Pdu, VerifyKeyInfo
from ranvier.protocol.hashes import add_content_hash, check_content_hash
from ranvier.protocol.redaction import redact_event
from ranvier.protocol.room_versions import KNOWN_ROOM_VERSIONS, RedactionRules, RoomVersion, get_room_version
from ranvier.protocol.signing import SigningKey, compute_signature, sign_json, verify_json_signature
from tests.spec_path import SPEC

VECTORS_PATH = SPEC / "test-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
KEY_INFO = VECTORS["signing_key"]
SERVER = KEY_INFO["server_name"]

PRE_V11 = [v for v in KNOWN_ROOM_VERSIONS.values() if v.redaction is not RedactionRules.V11]
FROM_V11 = [v for v in KNOWN_ROOM_VERSIONS.values() if v.redaction is RedactionRules.V11]


@pytest.fixture(scope="module")
def key() -> SigningKey:
    version = KEY_INFO["key_id"].split(":", 1)[1]
    return SigningKey.from_seed(version, decode_base64(KEY_INFO["seed_base64"]))


def test_signing_key_derives_the_published_public_key(key: SigningKey) -> None:
    assert key.key_id == KEY_INFO["key_id"]
    assert key.public_key_base64 == KEY_INFO["public_key_base64_derived"]


@pytest.mark.parametrize("vector", VECTORS["json_signing"], ids=lambda v: v["name"])
def test_json_signing(vector: dict[str, Any], key: SigningKey) -> None:
    signed = sign_json(copy.deepcopy(vector["input"]), SERVER, key)
    assert signed["signatures"][SERVER][key.key_id] == vector["expected_signature"]
    assert encode_canonical_json(signed) == encode_canonical_json(vector["expected_signed"])
    verify_json_signature(vector["expected_signed"], SERVER, key.key_id, key.verify_key)


def _sign_event(event: dict[str, Any], version: RoomVersion, key: SigningKey) -> dict[str, Any]:
    """S2S "Adding hashes and signatures to outgoing events", step by step."""
    event = copy.deepcopy(event)
    add_content_hash(event, version)
    signature = compute_signature(redact_event(event, version), key)
    event.setdefault("signatures", {}).setdefault(SERVER, {})[key.key_id] = signature
    return event


@pytest.mark.parametrize("version", PRE_V11, ids=lambda v: f"v{v.identifier}")
@pytest.mark.parametrize("vector", VECTORS["event_signing"], ids=lambda v: v["name"])
def test_event_signing_v1_to_v10(vector: dict[str, Any], version: RoomVersion, key: SigningKey) -> None:
    signed = _sign_event(vector["input"], version, key)
    assert signed["hashes"]["sha256"] == vector["expected_content_hash_sha256"]
    assert signed["signatures"][SERVER][key.key_id] == vector["expected_signature"]
    assert encode_canonical_json(signed) == encode_canonical_json(vector["expected_signed"])
    # and the expected output verifies as received: content hash, then the signature of the redacted form
    received = vector["expected_signed"]
    check_content_hash(received, version)
    verify_json_signature(redact_event(received, version), SERVER, key.key_id, key.verify_key)


@pytest.mark.parametrize("version", FROM_V11, ids=lambda v: f"v{v.identifier}")
@pytest.mark.parametrize("vector", VECTORS["event_signing"], ids=lambda v: v["name"])
def test_event_vectors_do_not_reproduce_with_v11_redaction(
    vector: dict[str, Any], version: RoomVersion, key: SigningKey
) -> None:
    # The content hash does not depend on redaction; the signature does (v11 drops "origin").
    signed = _sign_event(vector["input"], version, key)
    assert signed["hashes"]["sha256"] == vector["expected_content_hash_sha256"]
    assert signed["signatures"][SERVER][key.key_id] != vector["expected_signature"]


def test_minimal_event_vector_is_a_valid_pdu(key: SigningKey) -> None:
    """The first event vector is a complete v3+ PDU: the Pdu type accepts it and its checks pass."""
    expected = VECTORS["event_signing"][0]["expected_signed"]
    for identifier in ("3", "4", "5", "6", "7", "8", "9", "10"):
        pdu = Pdu(expected, get_room_version(identifier))
        pdu.check_content_hash()
        pdu.check_signatures(lambda server, key_id: VerifyKeyInfo(key.verify_key, None))
        assert pdu.sender == "@a:domain" and pdu.depth == 3 and pdu.prev_event_ids == ()
