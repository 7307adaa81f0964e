"""Typed errors of the protocol core.

Each error carries the Matrix ``errcode`` it maps to, so the HTTP edges can turn it into a response
without knowing the core's internals. ``remote_fault`` records whose fault the error is (h11 style): a
malformed PDU from a peer is the peer's fault, a failure to build our own event is ours.
"""

from __future__ import annotations


class ProtocolError(Exception):
    errcode: str = "M_UNKNOWN"
    remote_fault: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CanonicalJsonError(ProtocolError):
    """A value cannot be represented in canonical JSON (floats, huge ints, bad unicode, ...)."""

    errcode = "M_BAD_JSON"


class FormatError(ProtocolError):
    """An event or object does not have the shape the spec demands."""

    errcode = "M_BAD_JSON"


class EventTooLarge(FormatError):
    errcode = "M_TOO_LARGE"


class InvalidIdentifier(FormatError):
    errcode = "M_INVALID_PARAM"


class UnsupportedRoomVersion(ProtocolError):
    errcode = "M_UNSUPPORTED_ROOM_VERSION"


class SignatureError(ProtocolError):
    """A signature is missing, malformed or does not verify."""

    errcode = "M_FORBIDDEN"


class HashMismatch(ProtocolError):
    """The content hash of an event does not match its content."""

    errcode = "M_FORBIDDEN"


class AuthRejected(ProtocolError):
    """An event fails the authorization rules; ``rule`` names the spec rule (e.g. "4.2")."""

    errcode = "M_FORBIDDEN"

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"rule {rule}: {reason}")
        self.rule = rule
        self.reason = reason
