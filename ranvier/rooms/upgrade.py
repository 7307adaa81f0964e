"""Room upgrades (CS "Room Upgrades", server behaviour): ``POST /rooms/{roomId}/upgrade``.

1. The user must be allowed to send ``m.room.tombstone`` in the old room (checked before anything is made).
2. A new room whose ``m.room.create`` has ``predecessor`` (the old room and, before v12, the tombstone's
   event id; v1.16 lets v12+ leave the event id out, as it cannot be known: the v12 room id is the create
   event's hash and the tombstone names that id), the new ``room_version``, and the old ``type``.
3. The transferable state is copied: server ACL, encryption, name, avatar, topic, guest access, history
   visibility, join rules, power levels, and (for spaces) the ``m.space.child`` events still in use; bans
   are carried over too, as Synapse does. Memberships are not (the spec: servers cannot impersonate
   other servers' users); local members of the old room are invited when the new room is not public, so
   that they can follow the tombstone into an invite-only room; their room tags are copied.
4. Local aliases move to the new room, with the canonical alias event of both rooms updated.
5. The tombstone is sent to the old room.
6. The old room's power levels are raised so that ordinary users can no longer speak or invite
   (``events_default`` and ``invite`` to the greater of 50 and ``users_default + 1``).

While the new room's state is copied, the upgrading user holds the power the copy needs (every copied
state type and ``ban``); the old room's power levels are restored in the new room afterwards. In v12
rooms creators have unlimited power and may not appear in ``users`` (MSC4289): they are left out there.
Additional creators are not carried over (v1.16 note); the request names them.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Protocol

from ..protocol.auth.power_levels import room_creators
from ..protocol.errors import AuthRejected, UnsupportedRoomVersion
from ..protocol.events import Pdu
from ..protocol.identifiers import server_of
from ..protocol.room_versions import RoomVersion, get_room_version
from ..storage.protocols.composite import (
    HasAccountData,
    HasAliases,
    HasDirectory,
    HasEvents,
    HasRooms,
    HasState,
)
from .local_events import LocalEventCreator, RoomNotFound
from .membership import MembershipError, MembershipService
from .persister import EventPersister
from .room_summary import SPACE_CHILD, SPACE_ROOM_TYPE

logger = logging.getLogger(__name__)

# CS "Room Upgrades", server behaviour step 3 (with Synapse's order: power levels first, so that the
# copies after them are authorised by them).
COPIED_STATE = (
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
)
TOMBSTONE_BODY = "This room has been replaced"
TAG_TYPE = "m.tag"  # CS "Room Tagging": a room's tags are the user's m.tag room account data


class UpgradeStorage(HasRooms, HasEvents, HasState, HasAccountData, HasAliases, HasDirectory, Protocol):
    """What rooms/upgrade.py asks of storage."""


class UpgradeError(Exception):
    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message


class RoomUpgrader:
    def __init__(
        self,
        storage: UpgradeStorage,
        creator: LocalEventCreator,
        persister: EventPersister,
        membership: MembershipService,
        server_name: str,
    ) -> None:
        self._storage = storage
        self._creator = creator
        self._persister = persister
        self._membership = membership
        self.server_name = server_name

    async def upgrade(
        self, user_id: str, room_id: str, new_version: str, additional_creators: list[str] | None = None
    ) -> str:
        """Upgrade ``room_id`` to ``new_version`` for ``user_id``; returns the new room's id."""
        try:
            rv = get_room_version(new_version)
        except UnsupportedRoomVersion as e:
            raise UpgradeError(400, "M_UNSUPPORTED_ROOM_VERSION", e.message) from None
        if additional_creators and not rv.privileged_creators:
            raise UpgradeError(400, "M_BAD_JSON", f"room version {rv.identifier} has no additional creators")
        old_rv = await self._storage.rooms.get_room_version(room_id)
        membership = await self._storage.state.get_membership(room_id, user_id)
        if old_rv is None or membership is None or membership[0] != "join":
            raise UpgradeError(403, "M_FORBIDDEN", f"You are not joined to room {room_id}")
        state = await self._current_state(room_id)

        # Step 1: may the user send the tombstone? (A probe: the real one names the new room.)
        try:
            await self._creator.build_unpersisted(
                room_id, user_id, "m.room.tombstone", self._tombstone_content(room_id), ""
            )
        except AuthRejected as e:
            raise UpgradeError(403, "M_FORBIDDEN", f"You may not upgrade this room: {e.reason}") from None

        # Step 2: the new room, and before v12 the tombstone first (its id goes into the predecessor).
        old_create = state[("m.room.create", "")]
        create_content: dict[str, Any] = {"room_version": rv.identifier}
        if old_create.content.get("m.federate") is False:
            create_content["m.federate"] = False  # a local-only room stays local-only
        room_type = old_create.content.get("type")
        if isinstance(room_type, str):
            create_content["type"] = room_type
        if additional_creators:
            create_content["additional_creators"] = additional_creators
        tombstone: Pdu | None = None
        new_room_hint: str | None = None
        if rv.room_id_from_create_event:
            create_content["predecessor"] = {"room_id": room_id}
        else:
            new_room_hint = f"!{secrets.token_urlsafe(18)}:{self.server_name}"
            tombstone, tombstone_state = await self._creator.build_unpersisted(
                room_id, user_id, "m.room.tombstone", self._tombstone_content(new_room_hint), ""
            )
            create_content["predecessor"] = {"room_id": room_id, "event_id": tombstone.event_id}

        # Step 3: the copied state, with the power the copy needs lent to the upgrading user.
        old_levels = _content_of(state, "m.room.power_levels")
        creators = _creators_of(rv, user_id, additional_creators)
        copied = self._copied_state(state, room_type == SPACE_ROOM_TYPE)
        lending = _levels_for_new_room(old_levels, user_id, rv, creators, old_rv, old_create, lend=True)
        initial = [("m.room.power_levels", "", lending)] + [
            c for c in copied if c[0] != "m.room.power_levels"
        ]
        try:
            new_room_id = await self._creator.create_room_events(
                new_room_hint, rv, user_id, create_content, initial
            )
        except AuthRejected as e:
            raise UpgradeError(
                400, "M_BAD_JSON", f"the old room's state cannot be copied: {e.reason}"
            ) from None
        logger.info("upgrading %s to %s (version %s) for %s", room_id, new_room_id, rv.identifier, user_id)

        # Step 5: the tombstone in the old room.
        if tombstone is not None:
            async with self._persister.room_lock(room_id):
                await self._creator.persist_local(tombstone, tombstone_state)
        else:
            await self._creator.send(
                room_id, user_id, "m.room.tombstone", self._tombstone_content(new_room_id), state_key=""
            )

        await self._move_aliases(user_id, room_id, new_room_id, state)
        await self._restrict_old_room(user_id, room_id, old_levels)
        restored = _levels_for_new_room(old_levels, user_id, rv, creators, old_rv, old_create, lend=False)
        if restored != lending:
            await self._send_quietly(new_room_id, user_id, "m.room.power_levels", restored)
        if await self._storage.directory.get_visibility(room_id) == "public":
            await self._storage.directory.set_visibility(new_room_id, "public")
            await self._storage.directory.set_visibility(room_id, "private")
        await self._invite_local_members(user_id, room_id, new_room_id, state)
        await self._copy_tags(room_id, new_room_id, state)
        return new_room_id

    # -- steps ----------------------------------------------------------------------------------------

    async def _current_state(self, room_id: str) -> dict[tuple[str, str], Pdu]:
        ids = await self._storage.state.get_current_state_ids(room_id)
        events = await self._storage.events.get_events(list(ids.values()))
        return {k: events[v] for k, v in ids.items() if v in events}

    @staticmethod
    def _tombstone_content(replacement: str) -> dict[str, Any]:
        return {"body": TOMBSTONE_BODY, "replacement_room": replacement}

    @staticmethod
    def _copied_state(
        state: dict[tuple[str, str], Pdu], is_space: bool
    ) -> list[tuple[str, str, dict[str, Any]]]:
        out = [(t, "", state[(t, "")].content) for t in COPIED_STATE if (t, "") in state]
        if is_space:
            # A space's children, except those removed (an empty content, e.g. after a redaction).
            out += [
                (t, k, pdu.content)
                for (t, k), pdu in sorted(state.items())
                if t == SPACE_CHILD and pdu.content
            ]
        out += [
            ("m.room.member", k, {"membership": "ban", **_reason(pdu)})
            for (t, k), pdu in sorted(state.items())
            if t == "m.room.member" and pdu.membership == "ban"
        ]
        return out

    async def _move_aliases(
        self, user_id: str, old_room: str, new_room: str, state: dict[tuple[str, str], Pdu]
    ) -> None:
        """Step 4: our aliases of the old room point to the new one; the local canonical alias (and local
        alt aliases) move from the old room's m.room.canonical_alias to the new room's."""
        for alias in await self._storage.aliases.aliases_for_room(old_room):
            record = await self._storage.aliases.get_alias(alias)
            creator = record.creator if record is not None else user_id
            await self._storage.aliases.delete_alias(alias)
            await self._storage.aliases.create_alias(alias, new_room, creator)
        canonical = state.get(("m.room.canonical_alias", ""))
        if canonical is None:
            return
        old_content = dict(canonical.content)
        new_content: dict[str, Any] = {}
        main = old_content.get("alias")
        if isinstance(main, str) and _is_ours(main, self.server_name):
            new_content["alias"] = main
            del old_content["alias"]
        alt = old_content.get("alt_aliases")
        if isinstance(alt, list):
            ours = [a for a in alt if isinstance(a, str) and _is_ours(a, self.server_name)]
            if ours:
                new_content["alt_aliases"] = ours
                rest = [a for a in alt if a not in ours]
                if rest:
                    old_content["alt_aliases"] = rest
                else:
                    del old_content["alt_aliases"]
        if new_content:
            await self._send_quietly(old_room, user_id, "m.room.canonical_alias", old_content)
            await self._send_quietly(new_room, user_id, "m.room.canonical_alias", new_content)

    async def _restrict_old_room(self, user_id: str, room_id: str, old_levels: dict[str, Any] | None) -> None:
        """Step 6: ordinary users of the old room can no longer speak or invite."""
        if old_levels is None:
            return
        content = dict(old_levels)
        users_default = _int(content.get("users_default"), 0)
        restricted = max(50, users_default + 1)
        changed = False
        for key in ("events_default", "invite"):
            if _int(content.get(key), 0) < restricted:
                content[key] = restricted
                changed = True
        if changed:
            await self._send_quietly(room_id, user_id, "m.room.power_levels", content)

    async def _invite_local_members(
        self, user_id: str, old_room: str, new_room: str, state: dict[tuple[str, str], Pdu]
    ) -> None:
        join_rules = state.get(("m.room.join_rules", ""))
        if join_rules is not None and join_rules.content.get("join_rule") == "public":
            return  # anyone may follow the tombstone
        for (etype, key), pdu in sorted(state.items()):
            if etype != "m.room.member" or pdu.membership != "join" or key == user_id:
                continue
            if server_of(key) != self.server_name:
                continue
            try:
                await self._membership.invite(user_id, new_room, key)
            except (AuthRejected, MembershipError, RoomNotFound) as e:
                logger.info("could not invite %s to the upgraded room %s: %s", key, new_room, e)

    async def _copy_tags(self, old_room: str, new_room: str, state: dict[tuple[str, str], Pdu]) -> None:
        """CS "Room Upgrades": the users' "personalized settings such as ... tags" follow them to the new
        room: every local member's ``m.tag`` room account data is copied (as Synapse does at upgrade)."""
        for (etype, key), pdu in sorted(state.items()):
            if etype != "m.room.member" or pdu.membership != "join" or server_of(key) != self.server_name:
                continue
            tags = await self._storage.account_data.get_room(key, old_room, TAG_TYPE)
            if tags:
                await self._storage.account_data.put_room(key, new_room, TAG_TYPE, tags)

    async def _send_quietly(
        self, room_id: str, user_id: str, event_type: str, content: dict[str, Any]
    ) -> None:
        """A follow-up state event of the upgrade: one the rules refuse is logged, not an error (the new
        room exists and the tombstone is sent; the client gets the new room's id either way)."""
        try:
            await self._creator.send(room_id, user_id, event_type, content, state_key="")
        except AuthRejected as e:
            logger.warning("upgrade of %s: could not send %s: %s", room_id, event_type, e.reason)


def _reason(pdu: Pdu) -> dict[str, Any]:
    reason = pdu.content.get("reason")
    return {"reason": reason} if isinstance(reason, str) else {}


def _is_ours(alias: str, server_name: str) -> bool:
    return ":" in alias and server_of(alias) == server_name


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def _content_of(state: dict[tuple[str, str], Pdu], event_type: str) -> dict[str, Any] | None:
    pdu = state.get((event_type, ""))
    return dict(pdu.content) if pdu is not None else None


def _creators_of(rv: RoomVersion, user_id: str, additional: list[str] | None) -> set[str]:
    return {user_id, *(additional or [])} if rv.privileged_creators else set()


def _levels_for_new_room(
    old: dict[str, Any] | None,
    user_id: str,
    rv: RoomVersion,
    creators: set[str],
    old_rv: RoomVersion,
    old_create: Pdu,
    *,
    lend: bool,
) -> dict[str, Any]:
    """The new room's power levels: the old room's, with integer values (v10+ refuses strings), the new
    room's creators left out of ``users`` in v12+, and the upgrading user at 100 when the old room's
    creators held unlimited power (v12) that the new version cannot express. With ``lend``, the upgrading
    user also gets the level every copied event and ``ban`` need."""
    content: dict[str, Any] = {}
    for key, value in (old or {}).items():
        if key in ("users", "events", "notifications") and isinstance(value, dict):
            content[key] = {k: _int(v, 0) for k, v in value.items() if isinstance(k, str)}
        elif isinstance(value, int | str) and not isinstance(value, bool):
            content[key] = _int(value, 0)
    users: dict[str, int] = content.setdefault("users", {})
    if old is None and not rv.privileged_creators:
        users[user_id] = 100  # a room without power levels: its creator's default level
    if old_rv.privileged_creators and not rv.privileged_creators and user_id in room_creators(old_create):
        users[user_id] = max(users.get(user_id, 0), 100)
    if lend and not rv.privileged_creators:
        events = content.get("events", {})
        needed = max(
            _int(content.get("state_default"), 50),
            _int(content.get("ban"), 50),
            *(v for v in events.values()),
        )
        users_default = _int(content.get("users_default"), 0)
        if users.get(user_id, users_default) < needed:
            users[user_id] = needed
    for creator in creators:
        users.pop(creator, None)  # v12: creators may not be listed
    return content
