"""Where state resolution gets its events from: a narrow, synchronous protocol (ruma style, sans-I/O).

The storage layer implements ``EventSource`` over events it has already loaded (the caller fetches first,
then resolves in a worker thread); tests use ``DictEventSource``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Protocol, runtime_checkable

from ..events import Pdu


class EventSource(Protocol):
    """Events by id, and whether an event was rejected.

    ``get_event`` returns None for an event the server does not have; resolution then treats it as
    absent (it can neither be ordered nor authorised), as the spec's algorithm only uses events it can see.
    """

    def get_event(self, event_id: str) -> Pdu | None: ...

    def is_rejected(self, event_id: str) -> bool:
        """True if the event was rejected on receipt (its auth chain or the state before it disallowed it)."""
        ...


@runtime_checkable
class PrecomputedAuthChains(Protocol):
    """Optional extra a source may offer: an auth chain it has already computed (e.g. from an index table).

    Returning None means "not known here"; ``AuthChainIndex`` then walks ``auth_events`` itself.
    """

    def get_auth_chain(self, event_id: str) -> frozenset[str] | None: ...


class DictEventSource:
    """An in-memory ``EventSource`` over a mapping of event id to ``Pdu``."""

    __slots__ = ("_events", "_rejected")

    def __init__(
        self, events: Mapping[str, Pdu] | Iterable[Pdu] = (), rejected: Collection[str] = ()
    ) -> None:
        if isinstance(events, Mapping):
            self._events: dict[str, Pdu] = dict(events)
        else:
            self._events = {e.event_id: e for e in events}
        self._rejected = set(rejected)

    def add(self, event: Pdu, *, rejected: bool = False) -> None:
        self._events[event.event_id] = event
        if rejected:
            self._rejected.add(event.event_id)
        else:
            self._rejected.discard(event.event_id)

    def get_event(self, event_id: str) -> Pdu | None:
        return self._events.get(event_id)

    def is_rejected(self, event_id: str) -> bool:
        return event_id in self._rejected

    def __len__(self) -> int:
        return len(self._events)
