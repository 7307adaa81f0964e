from ranvier.protocol.events import Pdu, VerifyKeyInfo, build_event
from ranvier.protocol.room_versions import KNOWN_ROOM_VERSIONS
from ranvier.protocol.signing import SigningKey


def test_build_and_verify_create_event_every_version() -> None:
    key = SigningKey.generate("t1")
    for version in KNOWN_ROOM_VERSIONS.values():
        room_id = None if version.room_id_from_create_event else "!r:example.org"
        pdu = build_event(
            room_version=version,
            room_id=room_id,
            sender="@alice:example.org",
            event_type="m.room.create",
            state_key="",
            content={"room_version": version.identifier},
            prev_events=[],
            auth_events=[],
            depth=1,
            origin_server_ts=1_700_000_000_000,
            server_name="example.org",
            signing_key=key,
        )
        again = Pdu(pdu.json, version)
        assert again.event_id == pdu.event_id
        again.check_content_hash()
        again.check_signatures(lambda s, k: VerifyKeyInfo(key.verify_key, None))
