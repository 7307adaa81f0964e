"""The in-memory typing stream /sync reads: per-room change counters, expiry, and tokens from before a
restart. The clock is a plain variable the test moves."""

from __future__ import annotations

import pytest

from ranvier.client_api.ephemeral import SyncNotifier, TypingStream
from ranvier.client_api.sync_extras import SyncToken


def test_changes_expiry_and_notification() -> None:
    now = [1_000_000]
    notifier = SyncNotifier()
    ticket = notifier.ticket()
    typing = TypingStream(clock_ms=lambda: now[0], on_change=notifier.notify)

    typing.set_typing("!a", "@u:x", True, timeout_ms=5_000)
    assert ticket.is_set()
    after_start = typing.serial
    assert typing.rooms_changed_since(0) == {"!a"} and typing.typing_users("!a") == ["@u:x"]
    # A refresh changes nothing a client could see: no new position.
    typing.set_typing("!a", "@u:x", True, timeout_ms=5_000)
    assert typing.serial == after_start and typing.rooms_changed_since(after_start) == set()
    assert typing.seconds_to_next_expiry() == 5.0

    # Timing out is a change of the room, like stopping.
    now[0] += 5_000
    assert typing.rooms_changed_since(after_start) == {"!a"}
    assert typing.typing_users("!a") == [] and typing.seconds_to_next_expiry() is None
    # A token from before a restart (a larger counter than ours) is read as 0.
    assert typing.rooms_changed_since(typing.serial + 100) == {"!a"}


def test_sync_token_forms() -> None:
    assert SyncToken.parse("s12") == SyncToken(12, 0, 0, 0)
    assert SyncToken.parse("s12_3_4_5") == SyncToken(12, 3, 4, 5)
    assert SyncToken.parse("s12_3_4_5_6_7") == SyncToken(12, 3, 4, 5, 6, 7)  # with the E2EE streams
    assert SyncToken.parse("s12_3_4_5_6_7_8") == SyncToken(12, 3, 4, 5, 6, 7, 8)  # and presence
    assert str(SyncToken(12, 3, 4, 5)) == "s12_3_4_5_0_0_0"
    # Only ASCII digits, within the 64-bit integers storage holds (these were 500s or silently read).
    for bad in (
        "12",
        "s",
        "sx",
        "s1_2_3_4_5_6_7_8",
        "s1_-2",
        "t1_2",
        "s9999999999999999999",
        "s+1",
        "s1_",
        "s\u0661",
    ):
        with pytest.raises(ValueError):
            SyncToken.parse(bad)
