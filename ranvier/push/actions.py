"""Push actions at persist time: each live event is evaluated against the push rules of every local user
in the room, and what notifies or highlights is written in the same transaction as the event (the
persister's in-transaction hook, as the appservice queue does), so counts never miss a committed event
nor count one that was rolled back. Locally created events and those received over federation take the
same path.

The evaluation itself is pure (evaluator.py); this module gathers its inputs: the room's joined members,
its power levels and create event, and each member's rules (merged once per stored version and cached).
Evaluation for a batch with many recipients (THREAD_THRESHOLD) runs in a worker thread: about 6 ms an
event for a room of 1,000 local members (bench/push.py measures it); small rooms evaluate inline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..protocol.auth.power_levels import get_notification_level, get_user_power_level
from ..protocol.events import Pdu
from ..protocol.relations import relation_of
from ..protocol.room_versions import RoomVersion
from ..storage.interfaces import EventToPersist
from ..storage.protocols.push import PushActionStorage
from ..storage.sql.push_counts import MAIN_THREAD, PushActionRow
from ..storage.sql.relations import thread_root_of
from .evaluator import CompiledRuleset, DefaultRulesCompiler, EventFacts, compile_ruleset, evaluate
from .rules import ACCOUNT_DATA_TYPE, USER_PLACEHOLDER, merged_ruleset

_CACHE_LIMIT = 100_000
# Stands for every member with the default rules whom an event does not name (no real id: "invalid" is not
# a server name anyone can have, RFC 6761).
GENERIC_USER = "@generic-member:invalid"
_STATE_CACHE_LIMIT = 10_000
IGNORED_USERS = "m.ignored_user_list"
# The state every evaluation consults (the sender's power level, the notification levels).
STATE_KEYS = (("m.room.create", ""), ("m.room.power_levels", ""))
# (events x recipients) from which evaluation runs in a worker thread rather than on the event loop
THREAD_THRESHOLD = 1_000


def thread_of(content: Mapping[str, Any]) -> str:
    """The thread an event belongs to: its root's event id for an ``m.thread`` relation, else 'main'."""
    relation = content.get("m.relates_to")
    if isinstance(relation, Mapping) and relation.get("rel_type") == "m.thread":
        root = relation.get("event_id")
        if isinstance(root, str) and root:
            return root
    return MAIN_THREAD


async def _thread(txn: Any, pdu: Pdu) -> str:
    """``thread_of``, and for an event related to a thread's event (a reaction to a reply, an edit of one)
    that thread too (CS "Threaded read receipts": "following the event relationships"), read from the
    relations this transaction has written."""
    thread = thread_of(pdu.content)
    if thread == MAIN_THREAD and relation_of(pdu.content) is not None:
        return await thread_root_of(txn, pdu.event_id) or MAIN_THREAD
    return thread


def notification_levels(state: Mapping[tuple[str, str], Pdu]) -> dict[str, int]:
    """Every key of the power levels' ``notifications`` (and ``room``, 50 by default)."""
    keys = {"room"}
    pl = state.get(("m.room.power_levels", ""))
    if pl is not None and isinstance(pl.content.get("notifications"), Mapping):
        keys |= {k for k in pl.content["notifications"] if isinstance(k, str)}
    return {key: get_notification_level(state, key) for key in keys}


def event_facts(
    pdu: Pdu,
    member_count: int,
    state: Mapping[tuple[str, str], Pdu],
    room_version: RoomVersion,
    levels: Mapping[str, int] | None = None,
    sender_level: float | None = None,
) -> EventFacts:
    """What the rules see of ``pdu``; ``levels`` (``notification_levels(state)``) and the sender's power
    level may be given when known (a batch's events share the state: computed once per batch and sender)."""
    event: dict[str, Any] = {
        "event_id": pdu.event_id,
        "room_id": pdu.room_id,
        "type": pdu.type,
        "sender": pdu.sender,
        "content": pdu.content,
    }
    if pdu.state_key is not None:
        event["state_key"] = pdu.state_key
    return EventFacts(
        event,
        member_count,
        get_user_power_level(pdu.sender, state, room_version) if sender_level is None else sender_level,
        notification_levels(state) if levels is None else levels,
    )


@dataclass(frozen=True, slots=True)
class Recipient:
    user_id: str
    ruleset: CompiledRuleset
    display_name: str | None
    ignored: frozenset[str]
    invite_only: bool  # invited, not joined: only their own invite concerns them


def evaluate_for_recipients(
    room_id: str,
    jobs: Sequence[tuple[Pdu, int, EventFacts, str]],
    recipients: Sequence[Recipient],
    generic: Sequence[str] = (),
    generic_ruleset: CompiledRuleset | None = None,
) -> list[PushActionRow]:
    """Pure: the rows of every (event, recipient) pair whose outcome notifies or highlights. ``generic``:
    users whose outcome is that of ``generic_ruleset`` (the default rules of GENERIC_USER), evaluated
    once per event for all of them."""
    rows: list[PushActionRow] = []
    for pdu, ordering, facts, thread in jobs:
        if generic and generic_ruleset is not None:
            shared = evaluate(generic_ruleset, facts, GENERIC_USER, None)
            if shared is not None and (shared.notify or shared.highlight):
                rows.extend(
                    PushActionRow(
                        user_id,
                        room_id,
                        ordering,
                        pdu.event_id,
                        thread,
                        shared.notify,
                        shared.highlight,
                        shared.actions,
                    )
                    for user_id in generic
                )
        for r in recipients:
            if r.user_id == pdu.sender:
                continue  # one's own events never notify one
            if pdu.sender in r.ignored:
                continue  # CS "Ignoring Users"
            if r.invite_only and pdu.state_key != r.user_id:
                continue
            outcome = evaluate(r.ruleset, facts, r.user_id, r.display_name)
            if outcome is None or not (outcome.notify or outcome.highlight):
                continue
            rows.append(
                PushActionRow(
                    r.user_id,
                    room_id,
                    ordering,
                    pdu.event_id,
                    thread,
                    outcome.notify,
                    outcome.highlight,
                    outcome.actions,
                )
            )
    return rows


class PushActionsHook:
    def __init__(
        self, server_name: str, store: PushActionStorage, thread_threshold: int = THREAD_THRESHOLD
    ) -> None:
        self._server_name = server_name
        self._store = store
        self._thread_threshold = thread_threshold
        # event id -> users it notified, from the transaction until the persister's listener takes them
        # (rolled-back batches leave theirs: bounded, and an overflow asks for a full look instead)
        self._notified: dict[str, set[str]] = {}
        self._overflowed = False
        # user id -> (the stored rules' JSON text or None, the merged and compiled set)
        self._rulesets: dict[str, tuple[str | None, CompiledRuleset]] = {}
        self._defaults = DefaultRulesCompiler(USER_PLACEHOLDER, merged_ruleset(USER_PLACEHOLDER, None))
        self._generic_ruleset = self._defaults.for_user(GENERIC_USER)
        # event id -> the parsed create or power levels event (a stored event never changes)
        self._state_pdus: dict[str, Pdu] = {}

    def _state_pdu(self, event_id: str, text: str, room_version: RoomVersion) -> Pdu:
        """The create or power levels event, parsed once (not once per batch: ~50 us the pair)."""
        pdu = self._state_pdus.get(event_id)
        if pdu is None:
            if len(self._state_pdus) >= _STATE_CACHE_LIMIT:
                self._state_pdus.clear()
            pdu = self._state_pdus[event_id] = Pdu(_loads(text), room_version)
        return pdu

    def _generic_users(
        self, users: set[str], stored: Mapping[tuple[str, str], str], invited: set[str], events: list[Pdu]
    ) -> list[str]:
        """The users whose outcome for every event of the batch is the generic default user's: no rules
        or ignore list of their own, not invited by the batch, not named by any of its events (sender,
        state key, mentions: the conditions of the default rules that name the user), and an id that
        matches only itself in a case-insensitive glob (lower-case ASCII without ``*`` or ``?``). Empty
        when an event's state key could match an id by case folding (not ASCII) or names the generic
        user itself."""
        if self._generic_ruleset.uses_display_name:
            return []
        named: set[str] = set()
        for pdu in events:
            named.add(pdu.sender)
            if pdu.state_key is not None:
                if not pdu.state_key.isascii():
                    return []
                named.add(pdu.state_key.lower())
            mentions = pdu.content.get("m.mentions")
            ids = mentions.get("user_ids") if isinstance(mentions, Mapping) else None
            if isinstance(ids, list):
                named.update(i for i in ids if isinstance(i, str))
        if GENERIC_USER in named:
            return []
        own = {user for user, _ in stored}
        return sorted(
            u
            for u in users
            if u not in own
            and u not in invited
            and u not in named
            and u.isascii()
            and u.islower()
            and "*" not in u
            and "?" not in u
        )

    def _generic_is_quiet(self, events: list[Pdu], facts: list[EventFacts]) -> bool:
        """Whether every local member with the default rules whom no event of the batch mentions gets
        neither a notification nor a highlight from any of its events, without naming them: the default
        rules differ between such users only in ``.m.rule.invite_for_me`` (no event may be an invite:
        its state key is matched against each user's id as a glob) and ``.m.rule.is_user_mention`` (the
        mentioned are evaluated one by one), so the generic user's outcome is theirs."""
        if self._generic_ruleset.uses_display_name:
            return False
        for pdu in events:
            membership = pdu.content.get("membership")
            if isinstance(membership, str) and membership.lower() == "invite":
                return False
        for one in facts:
            outcome = evaluate(self._generic_ruleset, one, GENERIC_USER, None)
            if outcome is not None and (outcome.notify or outcome.highlight):
                return False
        return True

    def _ruleset(self, user_id: str, stored: str | None) -> CompiledRuleset:
        cached = self._rulesets.get(user_id)
        if cached is not None and cached[0] == stored:
            return cached[1]
        if stored is None:
            ruleset = self._defaults.for_user(user_id)
        else:
            ruleset = compile_ruleset(merged_ruleset(user_id, json.loads(stored)))
        if len(self._rulesets) >= _CACHE_LIMIT:
            self._rulesets.clear()
        self._rulesets[user_id] = (stored, ruleset)
        return ruleset

    async def in_txn(self, txn: Any, room_id: str, written: list[tuple[EventToPersist, int]]) -> None:
        live = [
            (item.pdu, ordering)
            for item, ordering in written
            if not item.outlier
            and item.rejected_reason is None
            and not item.soft_failed
            and not item.backfilled
        ]
        if not live:
            return
        # Three statements whatever the room's size: the room's member counts (one row per server), the
        # state the rules consult, then the local members' own rules and ignore lists; the local members
        # themselves are read (with those) only when an event notifies members with the default rules (a
        # message: a row is written for each of them anyway), not for a join, which notifies none of them
        # (one row per member of a room of 10,000 was read on every join).
        types = (ACCOUNT_DATA_TYPE, IGNORED_USERS)
        member_count, local_count, with_data = await self._store.member_counts_txn(
            txn, room_id, self._server_name, types
        )
        invited = {
            pdu.state_key
            for pdu, _ in live
            if pdu.type == "m.room.member"
            and pdu.state_key is not None
            and pdu.content.get("membership") == "invite"
            and pdu.state_key.endswith(":" + self._server_name)
        }
        if not local_count and not invited:
            return
        room_version = live[0][0].room_version
        texts = await self._store.state_events_txn(txn, room_id, STATE_KEYS)
        state = {key: self._state_pdu(*texts[key], room_version) for key in STATE_KEYS if key in texts}
        levels = notification_levels(state)
        sender_levels: dict[str, int | float] = {}
        jobs = []
        for pdu, ordering in live:
            level = sender_levels.get(pdu.sender)
            if level is None:
                level = sender_levels[pdu.sender] = get_user_power_level(pdu.sender, state, room_version)
            facts = event_facts(pdu, member_count, state, room_version, levels, level)
            jobs.append((pdu, ordering, facts, await _thread(txn, pdu)))
        events = [pdu for pdu, _ in live]
        if self._generic_is_quiet(events, [facts for _, _, facts, _ in jobs]):
            # Every member with the default rules whom no event mentions gets the generic outcome, which
            # is silence: only those with rules of their own and those mentioned are evaluated.
            stored = await self._store.members_account_data_txn(
                txn, room_id, self._server_name, types, local_count, with_data
            )
            local: set[str] = set()
            generic: list[str] = []
            mentioned = {u for pdu in events for u in _mentioned(pdu) if u.endswith(":" + self._server_name)}
            found = await self._store.joined_among_txn(txn, room_id, mentioned) if mentioned else set()
            individual = {user for user, _ in stored} | found
        else:
            members, stored = await self._store.local_members_txn(txn, room_id, self._server_name, types)
            local = set(members)
            users = local | invited
            if invited - local:
                stored.update(await self._store.global_account_data_txn(txn, invited - local, types))
            # Members with the server-default rules and nothing else of their own are evaluated once per
            # event for all of them (a join into a room of 50,000 local members evaluated 50,000 rule
            # sets); only those an event names, and everyone else, one by one.
            generic = self._generic_users(users, stored, invited, events)
            individual = users.difference(generic)
        if not individual and not generic:
            return
        rulesets = {
            user: self._ruleset(user, stored.get((user, ACCOUNT_DATA_TYPE))) for user in sorted(individual)
        }
        named = [user for user, ruleset in rulesets.items() if ruleset.uses_display_name]
        if named:
            texts = await self._store.state_events_txn(
                txn, room_id, [("m.room.member", user) for user in named]
            )
        recipients: list[Recipient] = []
        for user_id, ruleset in rulesets.items():
            found_text = texts.get(("m.room.member", user_id)) if ruleset.uses_display_name else None
            member = found_text[1] if found_text is not None else None
            # CS "Ignoring Users": an ignored user's events never notify the user ignoring them.
            ignored = stored.get((user_id, IGNORED_USERS))
            invite_only = user_id in invited and user_id not in local
            recipients.append(
                Recipient(
                    user_id,
                    ruleset,
                    _display_name(member) if member is not None else None,
                    _ignored(ignored) if ignored is not None else frozenset(),
                    invite_only,
                )
            )
        if len(jobs) * (len(recipients) + len(generic)) >= self._thread_threshold:
            # Pure CPU work of a few milliseconds and more (1,000 members: ~6 ms an event): in a worker
            # thread, so the event loop keeps serving meanwhile (the transaction stays open for it).
            rows = await asyncio.to_thread(
                evaluate_for_recipients, room_id, jobs, recipients, generic, self._generic_ruleset
            )
        else:
            rows = evaluate_for_recipients(room_id, jobs, recipients, generic, self._generic_ruleset)
        if rows:
            await self._store.insert_txn(txn, rows)
            self._remember(rows)

    async def out_of_band_in_txn(
        self, txn: Any, room_id: str, written: list[tuple[EventToPersist, int]]
    ) -> None:
        """For ``persist_out_of_band``: an invite from another server to a room we are not in notifies
        the local invitee (``.m.rule.invite_for_me``); the room's other events never reach us."""
        rows: list[PushActionRow] = []
        for item, ordering in written:
            pdu = item.pdu
            invitee = pdu.state_key
            if (
                pdu.type != "m.room.member"
                or invitee is None
                or pdu.content.get("membership") != "invite"
                or not invitee.endswith(":" + self._server_name)
                or item.rejected_reason is not None
            ):
                continue
            stored = await self._store.global_account_data_txn(txn, [invitee], (ACCOUNT_DATA_TYPE,))
            ruleset = self._ruleset(invitee, stored.get((invitee, ACCOUNT_DATA_TYPE)))
            # What the invitee knows of the room: nothing but the invite (count and levels unknown).
            facts = event_facts(pdu, 0, {}, pdu.room_version)
            outcome = evaluate(ruleset, facts, invitee, None)
            if outcome is not None and (outcome.notify or outcome.highlight):
                rows.append(
                    PushActionRow(
                        invitee,
                        room_id,
                        ordering,
                        pdu.event_id,
                        MAIN_THREAD,
                        outcome.notify,
                        outcome.highlight,
                        outcome.actions,
                    )
                )
        if rows:
            await self._store.insert_txn(txn, rows)
            self._remember(rows)

    def _remember(self, rows: Sequence[PushActionRow]) -> None:
        if len(self._notified) >= _CACHE_LIMIT:
            self._notified.clear()
            self._overflowed = True
        for row in rows:
            self._notified.setdefault(row.event_id, set()).add(row.user_id)

    def take_notified(self, batch: Sequence[EventToPersist]) -> set[str] | None:
        """After a commit: the users the batch's events notified; None when that is no longer known
        (look at every pusher)."""
        users: set[str] = set()
        for item in batch:
            users |= self._notified.pop(item.pdu.event_id, set())
        if self._overflowed:
            self._overflowed = False
            return None
        return users


def _mentioned(pdu: Pdu) -> list[str]:
    mentions = pdu.content.get("m.mentions")
    ids = mentions.get("user_ids") if isinstance(mentions, Mapping) else None
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def _display_name(member_text: str) -> str | None:
    name = _loads(member_text).get("content", {}).get("displayname")
    return name if isinstance(name, str) else None


def _ignored(text: str) -> frozenset[str]:
    users = _loads(text).get("ignored_users")
    return frozenset(u for u in users if isinstance(u, str)) if isinstance(users, dict) else frozenset()


def _loads(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
