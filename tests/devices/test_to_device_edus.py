"""Outgoing m.direct_to_device EDUs are split by size between users, each with its own message_id."""

from __future__ import annotations

import json

from ranvier.devices.to_device import MAX_EDU_MESSAGE_BYTES, _direct_to_device_edus


def test_messages_for_many_users_are_split_into_several_edus() -> None:
    per_user = [(f"@u{i}:remote", {"DEV": {"ciphertext": "x" * 5000}}) for i in range(40)]
    edus = _direct_to_device_edus("@a:here", "m.room.encrypted", per_user)
    assert len(edus) > 1
    assert len({e["message_id"] for e in edus}) == len(edus)
    assert [u for e in edus for u in e["messages"]] == [u for u, _ in per_user]  # each user once, in order
    for edu in edus:
        assert edu["sender"] == "@a:here" and edu["type"] == "m.room.encrypted"
        assert len(json.dumps(edu["messages"])) <= MAX_EDU_MESSAGE_BYTES + 200


def test_small_messages_share_one_edu() -> None:
    edus = _direct_to_device_edus("@a:here", "m.t", [("@b:r", {"D": {}}), ("@c:r", {"*": {"n": 1}})])
    assert len(edus) == 1 and edus[0]["messages"] == {"@b:r": {"D": {}}, "@c:r": {"*": {"n": 1}}}
