"""The pure presence rules (ranvier.presence.state): timeouts, what is worth telling, the client and EDU
forms, and the presence ``EventFilter``."""

from __future__ import annotations

from ranvier.presence.state import (
    OFFLINE,
    ONLINE,
    UNAVAILABLE,
    Timeouts,
    UserPresence,
    active,
    client_content,
    edu_push_item,
    from_edu_item,
    matches_filter,
    timed_out,
    worth_telling,
)

T = Timeouts()
NOW = 10_000_000


def online(last_active: int, **kw: object) -> UserPresence:
    return UserPresence("@a:hs", ONLINE, last_active_ts=last_active, currently_active=True, **kw)  # type: ignore[arg-type]


def test_idle_online_user_becomes_unavailable_after_five_minutes() -> None:
    p = online(NOW - T.idle_ms + 1)
    assert timed_out(p, NOW, T, local=True, syncing=True).state == ONLINE
    later = timed_out(p, NOW + 2, T, local=True, syncing=True)
    assert later.state == UNAVAILABLE and not later.currently_active


def test_currently_active_ends_a_minute_after_the_last_action() -> None:
    p = online(NOW)
    assert timed_out(p, NOW + 60_000, T, local=True, syncing=True).currently_active
    assert not timed_out(p, NOW + 60_001, T, local=True, syncing=True).currently_active


def test_offline_thirty_seconds_after_the_last_sync_ends() -> None:
    p = online(NOW - 1_000_000)  # idle long ago; the sync keeps them from going offline
    assert timed_out(p, NOW, T, local=True, syncing=True).state == UNAVAILABLE
    ended = NOW - T.offline_ms
    assert timed_out(p, NOW, T, local=True, last_sync_ts=ended).state == UNAVAILABLE
    assert timed_out(p, NOW + 1, T, local=True, last_sync_ts=ended).state == OFFLINE


def test_remote_users_time_out_after_thirty_minutes_of_silence() -> None:
    p = UserPresence("@b:other", ONLINE, last_active_ts=NOW, last_federation_update_ts=NOW)
    assert timed_out(p, NOW + T.federation_timeout_ms, T, local=False) == p
    assert timed_out(p, NOW + T.federation_timeout_ms + 1, T, local=False).state == OFFLINE


def test_offline_stays_offline_and_activity_wakes_an_idle_user() -> None:
    off = UserPresence("@a:hs")
    assert timed_out(off, NOW, T, local=True) is off
    idle = UserPresence("@a:hs", UNAVAILABLE, last_active_ts=1)
    woken = active(idle, NOW)
    assert (woken.state, woken.last_active_ts, woken.currently_active) == (ONLINE, NOW, True)


def test_worth_telling() -> None:
    p = online(NOW)
    assert not worth_telling(p, p)
    # A newer last-active time while currently active is not news (CS "Last active ago").
    assert not worth_telling(p, online(NOW + 5))
    assert worth_telling(p, online(NOW, status_msg="busy"))
    idle = UserPresence("@a:hs", UNAVAILABLE, last_active_ts=NOW)
    assert worth_telling(idle, UserPresence("@a:hs", UNAVAILABLE, last_active_ts=NOW + 5))


def test_client_and_edu_forms() -> None:
    p = online(NOW - 1500, status_msg="lunch")
    assert client_content(p, NOW) == {
        "presence": "online",
        "last_active_ago": 1500,
        "status_msg": "lunch",
        "currently_active": True,
    }
    # Never active: no last_active_ago; currently_active only when online.
    assert client_content(UserPresence("@a:hs"), NOW) == {"presence": "offline"}
    item = edu_push_item(p, NOW)
    assert item == {
        "user_id": "@a:hs",
        "presence": "online",
        "last_active_ago": 1500,
        "currently_active": True,
        "status_msg": "lunch",
    }
    # Never active: no last_active_ago rather than an invented one.
    assert "last_active_ago" not in edu_push_item(UserPresence("@a:hs", UNAVAILABLE), NOW)
    back = from_edu_item(item, "hs", NOW + 10)
    assert back is not None
    assert (back.state, back.last_active_ts, back.status_msg, back.last_federation_update_ts) == (
        ONLINE,
        NOW + 10 - 1500,
        "lunch",
        NOW + 10,
    )


def test_malformed_edu_items_are_dropped() -> None:
    for item in (
        None,
        [],
        {"user_id": 5, "presence": "online"},
        {"user_id": "@a:hs", "presence": "busy-ish"},
        {"presence": "online"},
    ):
        assert from_edu_item(item, "hs", NOW) is None
    odd = from_edu_item(
        {"user_id": "@a:hs", "presence": "unavailable", "last_active_ago": -5, "currently_active": True},
        "hs",
        NOW,
    )
    assert odd is not None and odd.last_active_ts == 0 and not odd.currently_active
    long = from_edu_item({"user_id": "@a:hs", "presence": "online", "status_msg": "x" * 5000}, "hs", NOW)
    assert long is not None and long.status_msg is None


def test_event_filter() -> None:
    event = {"type": "m.presence", "sender": "@a:hs", "content": {}}
    assert matches_filter(event, None)
    assert matches_filter(event, {"types": ["m.*"]})
    assert not matches_filter(event, {"types": ["m.room.*"]})
    assert not matches_filter(event, {"not_types": ["*"]})
    assert not matches_filter(event, {"not_types": ["m.pres*ce"]})
    assert matches_filter(event, {"senders": ["@a:hs"]})
    assert not matches_filter(event, {"senders": ["@b:hs"]})
    assert not matches_filter(event, {"not_senders": ["@a:hs"]})
