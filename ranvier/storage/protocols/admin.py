"""The admin API's own tables (shadow bans, rate-limit overrides, blocked rooms, registration tokens,
content reports, server-notice rooms) and its listing queries over users and rooms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..sql.admin import ContentReport, RateLimitOverride, RegistrationToken

__all__ = ["AdminStorage", "ContentReport", "RateLimitOverride", "RegistrationToken"]


class AdminStorage(Protocol):
    async def list_users(
        self,
        *,
        start: int,
        limit: int,
        name: str | None,
        deactivated: bool,
        user_id: str | None = None,
        admins: bool | None,
        order_by: str,
        backwards: bool,
    ) -> tuple[list[tuple[Any, ...]], int]:
        """A page of the users table's rows (as the admin API's listing reads them) and the total."""

    async def reactivate_user(self, user_id: str) -> None: ...
    async def set_shadow_banned(self, user_id: str, banned: bool) -> None: ...
    async def shadow_banned_users(self) -> set[str]: ...
    async def set_override(self, user_id: str, override: RateLimitOverride) -> None: ...
    async def delete_override(self, user_id: str) -> None: ...
    async def all_overrides(self) -> dict[str, RateLimitOverride]: ...
    async def set_room_blocked(self, room_id: str, by_user: str, blocked: bool) -> None: ...
    async def room_blocked_by(self, room_id: str) -> str | None: ...
    async def blocked_rooms(self) -> set[str]: ...
    async def add_report(
        self,
        kind: str,
        user_id: str,
        reason: str | None,
        content: dict[str, Any],
        *,
        room_id: str | None = None,
        event_id: str | None = None,
        target_user_id: str | None = None,
    ) -> int: ...
    async def list_reports(
        self,
        kind: str,
        *,
        start: int,
        limit: int,
        backwards: bool,
        room_id: str | None = None,
        user_id: str | None = None,
    ) -> tuple[list[ContentReport], int]: ...
    async def get_report(self, report_id: int) -> ContentReport | None: ...
    async def delete_report(self, report_id: int) -> bool: ...
    async def create_token(self, token: str, uses_allowed: int | None, expiry_time: int | None) -> bool: ...
    async def get_token(self, token: str) -> RegistrationToken | None: ...
    async def list_tokens(self) -> list[RegistrationToken]: ...
    async def update_token(self, token: str, changes: dict[str, int | None]) -> RegistrationToken | None: ...
    async def delete_token(self, token: str) -> bool: ...
    async def server_notice_room(self, user_id: str) -> str | None: ...
    async def set_server_notice_room(self, user_id: str, room_id: str) -> None: ...
    async def room_summary_rows(
        self, server_name: str, state_types: tuple[str, ...]
    ) -> tuple[
        list[tuple[str, str, str]],
        dict[str, tuple[int, int]],
        dict[str, int],
        dict[tuple[str, str], dict[str, Any]],
        set[tuple[str, str]],
    ]:
        """The rows the admin room listing is built from (see ``sql/admin.py``)."""


if TYPE_CHECKING:
    from ..sql.admin import AdminStore
    from ..sql.engine import Database

    def _sql_class_satisfies_the_protocol(db: Database) -> None:
        # Never called: mypy checks this assignment.
        _: AdminStorage = AdminStore(db)
