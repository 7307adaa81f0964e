"""What changed for a user since a sync position, besides room timelines: account data (global and per
room), receipts and typing, and the token that records how far a client has seen each stream. /sync
(client_api/sync.py) and simplified sliding sync (ranvier/sync/sliding.py) both read them here.

The token is ``s<events>_<account data>_<receipts>_<typing>_<to-device>_<device lists>_<presence>``
(to-device and device lists are the E2EE streams: ranvier/devices/sync_section.py; presence is
ranvier/presence/sync_section.py); the shorter forms, down to ``s<events>``, are still
accepted and read as having seen none of the other streams, so such a client gets them all once.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..client_api.account_data import client_account_data
from ..client_api.ephemeral import TypingStream
from ..push.rules import ACCOUNT_DATA_TYPE as PUSH_RULES
from ..push.rules import merged_ruleset, stored_form
from ..storage.protocols.composite import HasAccountData, HasDeviceLists, HasReceipts, HasToDevice
from ..storage.sql.receipts import client_receipt_contents

_TOKEN = re.compile(r"s[0-9]{1,18}(?:_[0-9]{1,18}){0,6}")


class ChangesStorage(HasAccountData, HasDeviceLists, HasToDevice, HasReceipts, Protocol):
    """What sync/changes.py asks of storage."""


@dataclass(frozen=True, slots=True)
class SyncToken:
    events: int
    account_data: int = 0
    receipts: int = 0
    typing: int = 0
    to_device: int = 0
    device_lists: int = 0
    presence: int = 0

    @classmethod
    def parse(cls, raw: str) -> SyncToken:
        # ASCII digits only, each part within storage's 64-bit integers (int() alone takes "+1", "1_0",
        # other scripts' digits and numbers no database column holds).
        if _TOKEN.fullmatch(raw) is None:
            raise ValueError(raw)
        return cls(*(int(p) for p in raw[1:].split("_")))

    def __str__(self) -> str:
        return (
            f"s{self.events}_{self.account_data}_{self.receipts}_{self.typing}"
            f"_{self.to_device}_{self.device_lists}_{self.presence}"
        )


@dataclass
class Extras:
    account_data: list[dict[str, Any]] = field(default_factory=list)
    room_account_data: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ephemeral: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def rooms(self) -> set[str]:
        return set(self.room_account_data) | set(self.ephemeral)


class SyncExtras:
    def __init__(self, storage: ChangesStorage, typing: TypingStream) -> None:
        self._storage = storage
        self._typing = typing

    async def position(self, events: int) -> SyncToken:
        self._typing.expire()
        return SyncToken(
            events,
            await self._storage.account_data.max_position(),
            await self._storage.receipts.max_position(),
            self._typing.serial,
            await self._storage.to_device.max_position(),
            await self._storage.device_lists.max_position(),
        )

    async def collect(
        self, user_id: str, joined: Collection[str], since: SyncToken | None, upto: SyncToken
    ) -> Extras:
        out = Extras()
        joined_set = set(joined)

        changes = await self._storage.account_data.changes_since(user_id, since.account_data if since else 0)
        # Bounded by the token's position: a write after it is delivered by the next sync instead.
        global_data = dict(changes.global_data)
        if since is None or PUSH_RULES in global_data:
            # m.push_rules is the user's effective rule set, the server's defaults included, and is in
            # every initial sync whether the user edited it or not (clients read their rules from it).
            global_data[PUSH_RULES] = stored_form(merged_ruleset(user_id, global_data.get(PUSH_RULES)))
        out.account_data = client_account_data(global_data)
        for room_id, data in changes.room_data.items():
            events = client_account_data(data)
            if events and room_id in joined_set:
                out.room_account_data[room_id] = events

        receipts = await self._storage.receipts.receipts_since(
            joined_set, since.receipts if since else 0, upto.receipts
        )
        # CS "Private read receipts": m.read.private is only ever shown to the user who sent it.
        visible = [r for r in receipts if r.receipt_type != "m.read.private" or r.user_id == user_id]
        for room_id, content in client_receipt_contents(visible).items():
            out.ephemeral.setdefault(room_id, []).append({"type": "m.receipt", "content": content})

        if since is None:
            typing_rooms = {r for r in joined_set if self._typing.typing_users(r)}
        else:
            typing_rooms = self._typing.rooms_changed_since(since.typing) & joined_set
        for room_id in sorted(typing_rooms):
            out.ephemeral.setdefault(room_id, []).append(
                {"type": "m.typing", "content": {"user_ids": self._typing.typing_users(room_id)}}
            )
        return out
