"""Auth chains, the auth difference and the conflicted state subgraph (rooms/v2 and rooms/v12 "Definitions").

The *auth chain* of an event is every event reachable through ``auth_events`` links, not the event itself.
Since room v12 (MSC4291) an event's ``auth_events`` no longer list the create event: the room id names it,
so every non-create event has the create event as an implicit auth event here.

``AuthChainIndex`` memoises each event's direct auth events and auth chain (an immutable property of the
event), so a caller that keeps one index per process pays for each chain once, however many resolutions
touch it. Chains that depend on a missing event are not memoised: the event may arrive later.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from ..events import Pdu
from .source import EventSource

CREATE_KEY = ("m.room.create", "")


def implicit_create_id(event: Pdu) -> str | None:
    """The create event an event of a v12+ room implies through its room id (None before v12)."""
    if not event.room_version.room_id_from_create_event:
        return None
    if event.type == "m.room.create" and event.state_key == "":
        return None
    return "$" + event.room_id[1:]


def auth_event_ids(event: Pdu) -> tuple[str, ...]:
    """The event's ``auth_events``, plus the implied create event since room v12."""
    create_id = implicit_create_id(event)
    if create_id is None or create_id in event.auth_event_ids:
        return event.auth_event_ids
    return (*event.auth_event_ids, create_id)


class AuthChainIndex:
    """Memoised direct auth events and auth chains, keyed by event id.

    Not thread-safe: give each worker thread its own index, or guard it.
    """

    __slots__ = ("_auth", "_chains", "_implied")

    def __init__(self) -> None:
        self._auth: dict[str, tuple[str, ...]] = {}
        # v12: (room id, auth_events as cited) -> the same plus the implied create event.
        self._implied: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self._chains: dict[str, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self._chains)

    def auth_ids(self, event_id: str, source: EventSource) -> tuple[str, ...] | None:
        """Direct auth events of ``event_id`` (create implied since v12), or None if the event is missing."""
        got = self._auth.get(event_id)
        if got is not None:
            return got
        event = source.get_event(event_id)
        if event is None:
            return None
        ids = self._auth[event_id] = self._derive(event)
        return ids

    def _derive(self, event: Pdu) -> tuple[str, ...]:
        ids: tuple[str, ...] = event.auth_event_ids
        if event.room_version.room_id_from_create_event and event.type != "m.room.create":
            # Since v12 the create event is implied by the room id: derived once per room, and the
            # completed tuple shared by every event of the room citing the same auth events (most joins
            # and messages of a room cite the same few), not rebuilt per event.
            key = (event.room_id, ids)
            got = self._implied.get(key)
            if got is None:
                create_id = "$" + event.room_id[1:]
                got = self._implied[key] = ids if create_id in ids else (*ids, create_id)
            return got
        if event.type == "m.room.create" and event.state_key != "":
            ids = auth_event_ids(event)  # an m.room.create with a state key is an ordinary event
        return ids

    def chain(self, event_id: str, source: EventSource) -> frozenset[str]:
        """The auth chain of ``event_id`` (empty if the event is missing)."""
        got = self._chains.get(event_id)
        if got is not None:
            return got
        return self._walk(event_id, source)

    def _walk(self, root: str, source: EventSource) -> frozenset[str]:
        chains = self._chains
        # getattr, not isinstance: a runtime-checkable Protocol check costs microseconds per call.
        precomputed = getattr(source, "get_auth_chain", None)
        # Chains that depend on a missing event (or sit on an auth cycle, possible only with the
        # sender-chosen event ids of v1/v2) are valid for this walk only.
        partial: dict[str, frozenset[str]] = {}
        begun: set[str] = set()
        # Iterative post-order DFS: auth chains may be thousands of events deep.
        stack = [root]
        while stack:
            x = stack[-1]
            if x in chains or x in partial:
                stack.pop()
                continue
            if precomputed is not None:
                known = precomputed(x)
                if known is not None:
                    chains[x] = known
                    stack.pop()
                    continue
            auth = self.auth_ids(x, source)
            if auth is None:
                partial[x] = frozenset()
                stack.pop()
                continue
            if x not in begun:
                begun.add(x)
                pending = [a for a in auth if a not in chains and a not in partial and a not in begun]
                if pending:
                    stack.extend(pending)
                    continue
            stack.pop()
            acc = set(auth)
            complete = True
            for a in auth:
                c = chains.get(a)
                if c is None:
                    complete = False
                    c = partial.get(a)
                    if c is None:  # ``a`` is an ancestor still being walked: an auth cycle
                        continue
                acc |= c
            if complete:
                chains[x] = frozenset(acc)
            else:
                partial[x] = frozenset(acc)
        got = chains.get(root)
        return got if got is not None else partial[root]

    def full_chain(self, event_ids: Collection[str], source: EventSource) -> set[str]:
        """The union of the auth chains of ``event_ids`` (the events themselves not included).

        Collects the direct auth events first: most state events share them (create, power levels,
        join rules), so far fewer chains are unioned than there are events. ``event_ids`` is read twice
        when some event is not memoised yet: a collection, not an iterator.
        """
        try:
            # Fast path, all direct auth events memoised: one C-level union.
            direct: set[str] = set().union(*map(self._auth.__getitem__, event_ids))
        except KeyError:
            direct = self._direct_slow(event_ids, source)
        acc = set(direct)
        chain = self.chain
        for a in direct:
            acc |= chain(a, source)
        return acc

    def _direct_slow(self, event_ids: Collection[str], source: EventSource) -> set[str]:
        """The direct auth events of ``event_ids``, memoising those not seen yet (the cold path: one pass
        over a whole state, so it avoids a call per event where it can)."""
        direct: set[str] = set()
        memo = self._auth
        memo_get = memo.get
        get_event = source.get_event
        derive = self._derive
        for event_id in event_ids:
            ids = memo_get(event_id)
            if ids is None:
                event = get_event(event_id)
                if event is None:
                    continue
                ids = memo[event_id] = derive(event)
            direct.update(ids)
        return direct


def auth_difference(
    index: AuthChainIndex,
    source: EventSource,
    unconflicted_ids: Collection[str],
    conflicted_per_set: Sequence[Collection[str]],
) -> set[str]:
    """The auth difference: union(C_i) - intersection(C_i), C_i being the full auth chain of state set i.

    Interop (rooms/fragments/v2-state-res.md "Auth difference"): C_i counts the events of state set i
    themselves, not only the union of their auth chains. The spec's wording ("the union of the auth chains
    for each event in S_i") excludes them; Synapse (its auth chain difference starts from the state events)
    and ruma include them, and an event that is in one state set and in another set's auth chain is then
    not in the difference. Two servers that disagree here resolve differently, so we do what they do.

    State set i is the unconflicted events plus ``conflicted_per_set[i]``. With U the unconflicted events
    and their full chain, and A_i set i's conflicted events and their full chain, C_i = U | A_i, so the
    difference is (union(A_i) - intersection(A_i)) - U: only the conflicted events' chains are compared,
    and U only filters that (usually small) candidate set.
    """
    if len(conflicted_per_set) < 2:
        return set()
    per_set = [index.full_chain(ids, source).union(ids) for ids in conflicted_per_set]
    union = set().union(*per_set)
    candidates = union - per_set[0].intersection(*per_set[1:])
    if not candidates:
        return candidates
    unconflicted = set(unconflicted_ids)
    candidates -= unconflicted
    if not candidates:
        return candidates
    return candidates - index.full_chain(unconflicted, source)


def conflicted_subgraph(index: AuthChainIndex, source: EventSource, conflicted: Collection[str]) -> set[str]:
    """The conflicted state subgraph (rooms/v12 "Definitions", MSC4297): every event on an auth path
    between two events of the conflicted state set, endpoints included.

    An event x lies on such a path iff x is in the auth chain of some conflicted event (or is one) and
    the auth chain of x contains a conflicted event (or x is one).
    """
    conflicted_set = set(conflicted)
    chain = index.chain
    below: set[str] = set()
    for c in conflicted_set:
        below |= chain(c, source)
    result = {x for x in below if not chain(x, source).isdisjoint(conflicted_set)}
    # A conflicted event is an endpoint when another conflicted event lies above or below it.
    result.update(c for c in conflicted_set if c in below or not chain(c, source).isdisjoint(conflicted_set))
    return result
