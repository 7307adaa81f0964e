"""History visibility rules (CS module "Room History Visibility", "Server behaviour"): a table for every
setting and membership, and properties for the before-or-after exceptions and for servers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranvier.protocol.visibility import (
    EventFacts,
    HistoryVisibility,
    UserAtEvent,
    allowed,
    server_may_see,
    user_may_see,
    visibility_from_content,
)

W, S, INV, J = (
    HistoryVisibility.WORLD_READABLE,
    HistoryVisibility.SHARED,
    HistoryVisibility.INVITED,
    HistoryVisibility.JOINED,
)
MEMBERSHIPS = [None, "join", "invite", "leave", "ban", "knock"]
MESSAGE = EventFacts("m.room.message", None, {"body": "hi"})
BOB = "@bob:b"

visibilities = st.sampled_from(list(HistoryVisibility))
memberships = st.sampled_from(MEMBERSHIPS)


# (membership at the event, joined later) -> the settings under which the user may see the event
TABLE = [
    (None, False, {W}),
    (None, True, {W, S}),  # rule 3: shared, and joined after the event
    ("join", False, {W, S, INV, J}),  # rule 2
    ("join", True, {W, S, INV, J}),
    ("invite", False, {W, INV}),  # rule 4
    ("invite", True, {W, S, INV}),
    ("leave", False, {W}),  # left: nothing after the leave
    ("leave", True, {W, S}),  # ... unless they came back (rule 3)
    ("ban", False, {W}),
    ("knock", False, {W}),
]


@pytest.mark.parametrize(("membership", "joined_later", "settings"), TABLE)
def test_rules_table(membership: str | None, joined_later: bool, settings: set[HistoryVisibility]) -> None:
    for visibility in HistoryVisibility:
        assert allowed(membership, visibility, joined_later) == (visibility in settings), visibility
        assert user_may_see(MESSAGE, BOB, membership, visibility, joined_later) == (visibility in settings)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, S),  # "if no history_visibility is set ... assumed to be shared"
        ({}, S),
        ({"history_visibility": "nonsense"}, S),  # "or if the value is not understood"
        ({"history_visibility": 1}, S),
        ({"history_visibility": "joined"}, J),
        ({"history_visibility": "world_readable"}, W),
        ({"history_visibility": "invited"}, INV),
    ],
)
def test_visibility_from_content(content: dict[str, object] | None, expected: HistoryVisibility) -> None:
    assert visibility_from_content(content) is expected


@given(visibilities, visibilities, memberships, st.booleans())
def test_history_visibility_events_visible_if_before_or_after_allows(
    before: HistoryVisibility, after: HistoryVisibility, membership: str | None, joined_later: bool
) -> None:
    event = EventFacts("m.room.history_visibility", "", {"history_visibility": after.value})
    expected = allowed(membership, before, joined_later) or allowed(membership, after, joined_later)
    assert user_may_see(event, BOB, membership, before, joined_later) == expected


def test_change_to_or_from_world_readable_is_visible_to_non_members() -> None:
    to_joined = EventFacts("m.room.history_visibility", "", {"history_visibility": "joined"})
    to_world = EventFacts("m.room.history_visibility", "", {"history_visibility": "world_readable"})
    assert user_may_see(to_joined, BOB, None, W, False)
    assert user_may_see(to_world, BOB, None, J, False)
    assert not user_may_see(to_joined, BOB, None, S, False)


@given(memberships, memberships, visibilities, st.booleans())
def test_own_member_events_visible_if_membership_before_or_after_allows(
    before: str | None, after: str | None, visibility: HistoryVisibility, joined_later: bool
) -> None:
    own = EventFacts("m.room.member", BOB, {"membership": after})
    other = EventFacts("m.room.member", "@carol:c", {"membership": after})
    expected = allowed(before, visibility, joined_later) or allowed(after, visibility, joined_later)
    assert user_may_see(own, BOB, before, visibility, joined_later) == expected
    # Someone else's membership change is an ordinary event.
    assert user_may_see(other, BOB, before, visibility, joined_later) == allowed(
        before, visibility, joined_later
    )


def test_own_join_and_leave_visible_even_when_joined_only() -> None:
    join = EventFacts("m.room.member", BOB, {"membership": "join"})
    leave = EventFacts("m.room.member", BOB, {"membership": "leave"})
    assert user_may_see(join, BOB, None, J, False)
    assert user_may_see(leave, BOB, "join", J, False)


users_at_event = st.lists(
    st.builds(UserAtEvent, st.sampled_from([BOB, "@carol:b", "@dan:b"]), memberships, st.booleans()),
    max_size=3,
)


@given(visibilities, users_at_event)
def test_a_server_sees_what_any_of_its_users_sees(
    visibility: HistoryVisibility, users: list[UserAtEvent]
) -> None:
    expected = visibility is W or any(
        user_may_see(MESSAGE, u.user_id, u.membership, visibility, u.joined_later) for u in users
    )
    assert server_may_see(MESSAGE, visibility, users) == expected


def test_a_server_without_users_sees_world_readable_boundaries_only() -> None:
    to_world = EventFacts("m.room.history_visibility", "", {"history_visibility": "world_readable"})
    assert server_may_see(to_world, J, [])
    assert not server_may_see(MESSAGE, J, [])
    assert not server_may_see(MESSAGE, S, [])
    assert server_may_see(MESSAGE, W, [])
