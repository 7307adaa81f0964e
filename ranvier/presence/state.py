"""Presence states and their rules, pure (CS "Presence", S2S "Presence"): data in, data out.

A user's presence is ``online``, ``unavailable`` or ``offline``, with the time of their last pro-active
action (``last_active_ts``), a ``currently_active`` flag and an optional status message. The server moves
states on by time (``timed_out``): an ``online`` user idle for ``idle_ms`` becomes ``unavailable`` (CS
"Idle timeout", 5 minutes as Synapse); a local user with no /sync running and none ended within
``offline_ms`` becomes ``offline`` (30 s, as Synapse's sync timeout); a remote user whose server said
nothing for ``federation_timeout_ms`` becomes ``offline`` (30 minutes, as Synapse).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

ONLINE = "online"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
STATES = (ONLINE, UNAVAILABLE, OFFLINE)

IDLE_MS = 5 * 60_000
OFFLINE_MS = 30_000
FEDERATION_TIMEOUT_MS = 30 * 60_000
# Local users' presence is sent to other servers again after this long without a change (Synapse: 25 min),
# so that their FEDERATION_TIMEOUT does not turn a quiet online user offline.
FEDERATION_PING_MS = 25 * 60_000
# A user active within this long counts as currently active (CS "Last active ago": servers may send
# ``currently_active`` instead of a stream of last-active updates).
ACTIVE_GRANULARITY_MS = 60_000
# The longest status message kept, in bytes of UTF-8 (set by a client or received from another server).
MAX_STATUS_MSG_BYTES = 4096


@dataclass(frozen=True, slots=True)
class UserPresence:
    user_id: str
    state: str = OFFLINE
    status_msg: str | None = None
    last_active_ts: int = 0
    last_federation_update_ts: int = 0
    currently_active: bool = False


@dataclass(frozen=True, slots=True)
class Timeouts:
    idle_ms: int = IDLE_MS
    offline_ms: int = OFFLINE_MS
    federation_timeout_ms: int = FEDERATION_TIMEOUT_MS
    federation_ping_ms: int = FEDERATION_PING_MS


def timed_out(
    p: UserPresence,
    now: int,
    timeouts: Timeouts,
    *,
    local: bool,
    syncing: bool = False,
    last_sync_ts: int = 0,
) -> UserPresence:
    """``p`` after the timeouts that have passed by ``now`` (``p`` itself when none has)."""
    if p.state == OFFLINE:
        return p
    if not local:
        if now - p.last_federation_update_ts > timeouts.federation_timeout_ms:
            return replace(p, state=OFFLINE, currently_active=False)
        return p
    new = p
    if new.state == ONLINE and now - new.last_active_ts > timeouts.idle_ms:
        new = replace(new, state=UNAVAILABLE)
    if new.currently_active and now - new.last_active_ts > ACTIVE_GRANULARITY_MS:
        new = replace(new, currently_active=False)
    if not syncing and now - max(last_sync_ts, new.last_active_ts) > timeouts.offline_ms:
        new = replace(new, state=OFFLINE, currently_active=False)
    return new


def active(p: UserPresence, now: int) -> UserPresence:
    """A pro-active action (a message sent, presence set to online): the last active time moves to now
    and an idle user is online again (CS "Idle timeout")."""
    state = ONLINE if p.state == UNAVAILABLE else p.state
    return replace(p, state=state, last_active_ts=now, currently_active=state == ONLINE)


def worth_telling(old: UserPresence, new: UserPresence) -> bool:
    """Whether others (clients, other servers) should hear of the change from ``old`` to ``new``. A new
    last active time alone is not news while the user stays currently active (CS "Last active ago")."""
    if (old.state, old.status_msg, old.currently_active) != (new.state, new.status_msg, new.currently_active):
        return True
    return old.last_active_ts != new.last_active_ts and not new.currently_active


def client_content(p: UserPresence, now: int) -> dict[str, Any]:
    """The ``m.presence`` event content, as GET /presence/{userId}/status answers it. ``last_active_ago``
    is left out when the user was never seen active, ``currently_active`` is only given when online
    (as Synapse does)."""
    content: dict[str, Any] = {"presence": p.state}
    if p.last_active_ts:
        content["last_active_ago"] = max(0, now - p.last_active_ts)
    if p.status_msg is not None:
        content["status_msg"] = p.status_msg
    if p.state == ONLINE:
        content["currently_active"] = p.currently_active
    return content


def client_event(p: UserPresence, now: int) -> dict[str, Any]:
    """The ``m.presence`` event of /sync's ``presence`` section (CS "m.presence")."""
    return {"type": "m.presence", "sender": p.user_id, "content": client_content(p, now)}


def edu_push_item(p: UserPresence, now: int) -> dict[str, Any]:
    """One entry of an ``m.presence`` EDU's ``push`` (S2S "Presence"). ``last_active_ago`` is marked
    required there, but for a user never seen active there is no such time: it is left out rather than
    invented, as Synapse does (and Synapse takes such entries)."""
    item: dict[str, Any] = {
        "user_id": p.user_id,
        "presence": p.state,
        "currently_active": p.currently_active,
    }
    if p.last_active_ts:
        item["last_active_ago"] = max(0, now - p.last_active_ts)
    if p.status_msg is not None:
        item["status_msg"] = p.status_msg
    return item


def from_edu_item(item: Any, origin_server: str, now: int) -> UserPresence | None:
    """A remote user's presence from one ``push`` entry, or None when it is malformed. The caller checks
    that the user belongs to the sending server."""
    if not isinstance(item, dict):
        return None
    user_id, state = item.get("user_id"), item.get("presence")
    if not isinstance(user_id, str) or state not in STATES:
        return None
    ago = item.get("last_active_ago")
    if isinstance(ago, bool) or not isinstance(ago, int) or ago < 0:
        ago = None
    status = item.get("status_msg")
    if isinstance(status, str) and len(status.encode("utf-8", "surrogatepass")) > MAX_STATUS_MSG_BYTES:
        status = None  # a status line, not a document: an oversized one is not kept
    active_flag = item.get("currently_active")
    return UserPresence(
        user_id=user_id,
        state=str(state),
        status_msg=status if isinstance(status, str) else None,
        last_active_ts=now - ago if ago is not None else 0,
        last_federation_update_ts=now,
        currently_active=active_flag is True and state == ONLINE,
    )


def matches_filter(event: dict[str, Any], event_filter: Any) -> bool:
    """CS "Filtering" ``EventFilter``: ``types``/``not_types`` (``*`` wildcards) and
    ``senders``/``not_senders`` (``limit`` is the caller's)."""
    if not isinstance(event_filter, dict):
        return True
    event_type, sender = event["type"], event["sender"]

    def any_type(patterns: Any) -> bool:
        return isinstance(patterns, list) and any(
            _glob(p, event_type) for p in patterns if isinstance(p, str)
        )

    if any_type(event_filter.get("not_types")):
        return False
    not_senders = event_filter.get("not_senders")
    if isinstance(not_senders, list) and sender in not_senders:
        return False
    types = event_filter.get("types")
    if isinstance(types, list) and not any_type(types):
        return False
    senders = event_filter.get("senders")
    return not (isinstance(senders, list) and sender not in senders)


def _glob(pattern: str, value: str) -> bool:
    """``*`` matches any run of characters (CS "Filtering": "A '*' can be used as a wildcard")."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == value
    if not value.startswith(parts[0]) or not value.endswith(parts[-1]):
        return False
    pos = len(parts[0])
    end = len(value) - len(parts[-1])
    for part in parts[1:-1]:
        found = value.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return pos <= end
