"""relation_of and is_valid_replacement (pure): what counts as a relationship and as a valid edit (CS
"Forming relationships between events", "Validity of replacement events")."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.protocol.relations import Relation, is_valid_replacement, relation_of


@pytest.mark.parametrize(
    ("relates_to", "expected"),
    [
        ({"rel_type": "m.thread", "event_id": "$root"}, Relation("$root", "m.thread")),
        ({"rel_type": "m.annotation", "event_id": "$e", "key": "👍"}, Relation("$e", "m.annotation", "👍")),
        ({"rel_type": "m.reference", "event_id": "$e", "key": "ignored"}, Relation("$e", "m.reference")),
        ({"rel_type": "org.example", "event_id": "$e"}, Relation("$e", "org.example")),
        ({"m.in_reply_to": {"event_id": "$e"}}, None),  # a rich reply has no rel_type
        ({"rel_type": "m.thread"}, None),
        ({"rel_type": "m.thread", "event_id": 5}, None),
        ({"rel_type": "m.thread", "event_id": "not-an-id"}, None),
        ({"rel_type": "m.thread", "event_id": "$" + "a" * 255}, None),  # longer than any event id
        ({"rel_type": "m.thread", "event_id": "$a\x00b"}, None),
        ({"rel_type": "", "event_id": "$e"}, None),
        ({"rel_type": ["m.thread"], "event_id": "$e"}, None),
        ({"rel_type": "m.annotation", "event_id": "$e"}, None),  # no key
        ({"rel_type": "m.annotation", "event_id": "$e", "key": 1}, None),
        ("m.thread", None),
    ],
)
def test_relation_of(relates_to: Any, expected: Relation | None) -> None:
    assert relation_of({"body": "x", "m.relates_to": relates_to}) == expected


def _event(sender: str = "@a:x", etype: str = "m.room.message", **content: Any) -> dict[str, Any]:
    return {"sender": sender, "type": etype, "content": content}


def test_is_valid_replacement() -> None:
    original = _event(body="hi")
    edit = _event(body="* hey", **{"m.new_content": {"body": "hey"}})
    assert is_valid_replacement(original, edit)
    assert not is_valid_replacement(original, _event(sender="@b:x", **{"m.new_content": {"body": "x"}}))
    assert not is_valid_replacement(original, _event(etype="m.sticker", **{"m.new_content": {"body": "x"}}))
    assert not is_valid_replacement(original, _event(body="no new content"))
    assert not is_valid_replacement({**original, "state_key": ""}, edit)
    assert not is_valid_replacement(original, {**edit, "state_key": ""})
    # An edit cannot be edited.
    an_edit = _event(body="*", **{"m.relates_to": {"rel_type": "m.replace", "event_id": "$o"}})
    assert not is_valid_replacement(an_edit, edit)
    # An encrypted edit's m.new_content is in its ciphertext: the server cannot check it.
    encrypted = _event(etype="m.room.encrypted", ciphertext="...")
    assert is_valid_replacement(_event(etype="m.room.encrypted", ciphertext="..."), encrypted)
