"""The user directory's tables (migration 611) and its search (CS "User Directory").

``update_from_persisted`` runs inside each persisted batch's transaction: a join event (local or remote,
not backfilled: an old join must not undo a newer profile) sets the user's directory profile, and a batch
that touches a room's join rules or history visibility re-reads whether the room counts as public, from the
room's current state as the batch leaves it. Joins and leaves need nothing here: who shares a room with
whom is read from ``room_memberships`` at search time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ranvier.protocol.events import Pdu

from .aux_streams import load_json
from .engine import Database, Txn

_WORD = re.compile(r"[^\W_]+")
# The SQL twin of ``search_text`` for rows it has not written (migration 611, local users' own profiles):
# lower-cased, the punctuation of user ids turned into spaces.
_SQL_WORDS = (
    "replace(replace(replace(replace(replace(lower({}), '@', ' '), ':', ' '), '.', ' '), '_', ' '), '-', ' ')"
)
PUBLIC_STATE = ("m.room.join_rules", "m.room.history_visibility")


def search_text(user_id: str, display_name: str | None) -> str:
    words = _WORD.findall(f"{user_id} {display_name or ''}".lower())
    return " " + " ".join(words) + " "


def query_words(term: str) -> list[str]:
    """The words of a directory search term, lower-cased, once each (at most 8: the rest adds nothing)."""
    return list(dict.fromkeys(_WORD.findall(term.lower())))[:8]


def _string(value: Any) -> str | None:
    return value.replace("\x00", "") if isinstance(value, str) else None


async def update_from_persisted(txn: Txn, room_id: str, events: Sequence[tuple[Pdu, int]]) -> None:
    """Profiles from the batch's live join events; the room's public flag if the batch changed it."""
    profiles: dict[str, tuple[str | None, str | None]] = {}
    for pdu, stream in events:
        if pdu.type == "m.room.member" and pdu.membership == "join" and pdu.state_key and stream > 0:
            profiles[pdu.state_key] = (
                _string(pdu.content.get("displayname")),
                _string(pdu.content.get("avatar_url")),
            )
    if profiles:
        await txn.executemany(
            "INSERT INTO user_directory (user_id, display_name, avatar_url, search_text) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name,"
            " avatar_url = excluded.avatar_url, search_text = excluded.search_text",
            [(u, name, avatar, search_text(u, name)) for u, (name, avatar) in profiles.items()],
        )
    if any(pdu.type in PUBLIC_STATE and pdu.state_key == "" for pdu, _ in events):
        await _refresh_public(txn, room_id)


async def _refresh_public(txn: Txn, room_id: str) -> None:
    rows = await txn.fetchall(
        "SELECT c.type, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id"
        " WHERE c.room_id = ? AND c.state_key = '' AND c.type IN (?, ?)",
        (room_id, *PUBLIC_STATE),
    )
    public = False
    for event_type, text in rows:
        content = load_json(text).get("content", {})
        if event_type == "m.room.join_rules" and content.get("join_rule") == "public":
            public = True
        if (
            event_type == "m.room.history_visibility"
            and content.get("history_visibility") == "world_readable"
        ):
            public = True
    if public:
        await txn.execute(
            "INSERT INTO user_directory_public_rooms (room_id) VALUES (?) ON CONFLICT DO NOTHING", (room_id,)
        )
    else:
        await txn.execute("DELETE FROM user_directory_public_rooms WHERE room_id = ?", (room_id,))


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    user_id: str
    display_name: str | None
    avatar_url: str | None


class UserDirectoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def search(
        self, searcher: str, words: Sequence[str], limit: int, *, all_users: bool
    ) -> list[DirectoryEntry]:
        """Up to ``limit`` users matching every word (a prefix of a word of their id or display name) whom
        ``searcher`` shares a joined room with or who are joined to a public room; with ``all_users`` also
        every local user. Deactivated local users are left out. A local user's own profile is used."""
        if not words:
            return []
        own = _SQL_WORDS.format("d.user_id || ' ' || COALESCE(u.displayname, '')")
        # d.search_text is exact for remote users; a local user's text is made from their own profile.
        text = f"(CASE WHEN u.user_id IS NULL THEN d.search_text ELSE ' ' || {own} || ' ' END)"
        match = " AND ".join(f"{text} LIKE ?" for _ in words)
        params: list[Any] = [f"% {w}%" for w in words]
        visible = (
            "d.user_id IN (SELECT theirs.user_id FROM room_memberships mine"
            " JOIN room_memberships theirs ON theirs.room_id = mine.room_id"
            " WHERE mine.user_id = ? AND mine.membership = 'join' AND theirs.membership = 'join')"
            " OR d.user_id IN (SELECT m.user_id FROM user_directory_public_rooms p"
            " JOIN room_memberships m ON m.room_id = p.room_id WHERE m.membership = 'join')"
        )
        params.append(searcher)
        if all_users:
            visible += " OR u.user_id IS NOT NULL"
        sql = (
            "SELECT d.user_id AS user_id, COALESCE(u.displayname, d.display_name) AS display_name,"
            " COALESCE(u.avatar_url, d.avatar_url) AS avatar_url FROM user_directory d"
            " LEFT JOIN users u ON u.user_id = d.user_id"
            f" WHERE (u.deactivated IS NULL OR u.deactivated = 0) AND ({match}) AND ({visible})"
        )
        if all_users:
            # Local users who never joined a room have no directory row: their own profile is searched.
            local = _SQL_WORDS.format("u.user_id || ' ' || COALESCE(u.displayname, '')")
            local_match = " AND ".join(f"(' ' || {local} || ' ') LIKE ?" for _ in words)
            sql += (
                " UNION SELECT u.user_id, u.displayname, u.avatar_url FROM users u"
                " WHERE u.deactivated = 0 AND u.user_id NOT IN (SELECT user_id FROM user_directory)"
                f" AND {local_match}"
            )
            params += [f"% {w}%" for w in words]
        # CS: "Ordered by rank and then whether or not profile info is available". Rank: a display name or
        # localpart that starts with the first word comes before a match further in.
        first = words[0]
        rank = "CASE WHEN lower(display_name) LIKE ? OR lower(user_id) LIKE ? THEN 0 ELSE 1 END"
        rows = await self._db.fetchall(
            f"SELECT user_id, display_name, avatar_url FROM ({sql}) AS found"
            f" ORDER BY {rank}, display_name IS NULL, avatar_url IS NULL, user_id LIMIT ?",
            (*params, f"{first}%", f"@{first}%", limit),
        )
        return [DirectoryEntry(r[0], r[1], r[2]) for r in rows]
