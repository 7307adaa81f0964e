"""Knocking (CS "Knocking on rooms", S2S "Knocking upon a room"): a local user asks to be let in.

In a room this server is in, the knock is an ordinary local event. Otherwise it goes over federation,
from this side as the knocking server: ``make_knock`` against each candidate server in turn, sign the
template, ``send_knock``, and keep the knock as an out-of-room membership (an outlier recorded as the user's
membership, as for invites) carrying the room's stripped state from the answer (``knock_room_state``),
which ``/sync`` shows under ``rooms.knock``. The resident's side is ``rooms.resident`` (the same
make/send handshake as joins and leaves).

An invite or a join after the knock needs nothing special: the invite arrives over ``/invite`` like any
other, and the join goes through ``rooms.membership``. Rescinding the knock is a leave, which for a room we
are not in is made with make_leave/send_leave (``rooms.remote_join.reject_invite``).
"""

from __future__ import annotations

import logging
from typing import Any

from ..federation.client import FederationClient, FederationError
from ..protocol.errors import ProtocolError
from ..protocol.events import Pdu
from ..protocol.identifiers import server_of
from ..protocol.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from ..protocol.signing import SigningKey
from ..storage.protocols.composite import HasState
from .local_events import LocalEventCreator
from .membership import MembershipError, MembershipService
from .membership_template import sign_membership_template
from .remote_join import remote_failure
from .resident import ResidentMembership, stripped_room_state

logger = logging.getLogger(__name__)

# Room versions in which knocking exists (the ``ver`` of make_knock): v7 and later.
KNOCK_VERSIONS = [v for v in KNOWN_ROOM_VERSIONS if get_room_version(v).knock_join_rule]


class KnockService:
    def __init__(
        self,
        storage: HasState,
        creator: LocalEventCreator,
        membership: MembershipService,
        server_name: str,
        signing_key: SigningKey,
        *,
        resident: ResidentMembership | None = None,
        client: FederationClient | None = None,
    ) -> None:
        self._storage = storage
        self._creator = creator
        self._membership = membership
        self.server_name = server_name
        self._signing_key = signing_key
        self._resident = resident
        self._client = client

    async def knock(
        self, user_id: str, room_id_or_alias: str, via: list[str], reason: str | None = None
    ) -> str:
        """Knock on a room for ``user_id``; returns the room id. Raises MembershipError or AuthRejected."""
        room_id, alias_servers = await self._membership.resolve_room(room_id_or_alias)
        current = await self._storage.state.get_membership(room_id, user_id)
        if current is not None and current[0] in ("join", "ban", "invite"):
            # CS "POST /knock": 403 when the user "is already in the room, banned, or invited".
            raise MembershipError("M_FORBIDDEN", f"{user_id} is already {current[0]} in {room_id}", 403)
        content: dict[str, Any] = {"membership": "knock", **await self._membership.profile_content(user_id)}
        if reason:
            content["reason"] = reason
        if await self._membership.we_are_in_room(room_id):
            rv = await self._creator.room_version(room_id)
            if not rv.knock_join_rule:
                raise _unsupported(rv)
            await self._creator.send(room_id, user_id, "m.room.member", content, state_key=user_id)
            return room_id
        servers = [*via, *alias_servers]
        if ":" in room_id[1:]:
            servers.append(server_of(room_id))  # pre-v12 room ids name the room's creating server
        servers = list(dict.fromkeys(s for s in servers if s != self.server_name))
        if self._client is None or self._resident is None or not servers:
            raise MembershipError("M_NOT_FOUND", f"no known server to knock on {room_id} through", 404)
        failures: list[MembershipError] = []
        for server in servers:
            try:
                await self._knock_via(server, user_id, room_id, content)
                return room_id
            except FederationError as e:
                failures.append(remote_failure(server, f"knock on {room_id}", e))
            except MembershipError as e:
                failures.append(e)
            except (ProtocolError, ValueError) as e:
                failures.append(
                    MembershipError("M_UNKNOWN", f"could not knock on {room_id} via {server}: {e}", 502)
                )
            logger.info("knocking on %s via %s failed: %s", room_id, server, failures[-1].message)
        # The most telling failure: a refusal a server stated, over network failures and broken answers.
        stated = [f for f in failures if f.status != 502 and not f.unreachable]
        raise (stated or failures)[0]

    async def _knock_via(self, server: str, user_id: str, room_id: str, content: dict[str, Any]) -> None:
        assert self._client is not None and self._resident is not None
        answer = await self._client.make_knock(server, room_id, user_id, KNOCK_VERSIONS)
        rv = get_room_version(str(answer.get("room_version", "1")))
        if not rv.knock_join_rule:
            raise _unsupported(rv)
        knock = self._sign_template(rv, answer.get("event"), room_id, user_id, content)
        response = await self._client.send_knock(server, room_id, knock.event_id, knock.json)
        try:
            stripped = stripped_room_state(response.get("knock_room_state"), rv, room_id)
        except Exception as e:  # FederationRequestError: the resident's list breaks the v1.16 rules
            raise ValueError(f"{server} answered send_knock with unusable knock_room_state: {e}") from None
        if stripped:
            knock = knock.with_unsigned({**knock.unsigned, "knock_room_state": stripped})
        await self._resident.remember_out_of_room_membership(knock)
        logger.info("%s knocked on %s via %s", user_id, room_id, server)

    def _sign_template(
        self, rv: RoomVersion, template: Any, room_id: str, user_id: str, content: dict[str, Any]
    ) -> Pdu:
        """S2S make_knock: the template MUST have our room id, the user as sender and state key, type
        m.room.member and membership knock; anything else is malformed and discarded."""
        if not isinstance(template, dict):
            raise ValueError("make_knock answered without an event template")
        raw_content = template.get("content")
        if (
            template.get("room_id") != room_id
            or template.get("sender") != user_id
            or template.get("state_key") != user_id
            or template.get("type") != "m.room.member"
            or not isinstance(raw_content, dict)
            or raw_content.get("membership") != "knock"
        ):
            raise ValueError("make_knock returned a template that is not our knock")

        return sign_membership_template(
            rv,
            template,
            room_id=room_id,
            user_id=user_id,
            content=content,
            server_name=self.server_name,
            signing_key=self._signing_key,
        )


def _unsupported(rv: RoomVersion) -> MembershipError:
    return MembershipError(
        "M_UNSUPPORTED_ROOM_VERSION", f"room version {rv.identifier} does not support knocking", 400
    )
