"""Server-side key backups (CS "Server-side key backups"): versions (create, read, update, delete) and the
room keys in a version at three levels (all, a room, a session), with the version and etag rules:
keys are written only to the current version (else ``WrongVersion`` naming it), and every change of the
stored keys moves the version's etag.
"""

from __future__ import annotations

from typing import Any

from ..storage.protocols.composite import HasKeyBackup
from ..storage.sql.e2ee_backup import RoomKey


class BackupError(Exception):
    def __init__(self, status: int, errcode: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra


def not_found(message: str = "Unknown backup version") -> BackupError:
    return BackupError(404, "M_NOT_FOUND", message)


def invalid(message: str) -> BackupError:
    return BackupError(400, "M_INVALID_PARAM", message)


def parse_version(raw: str | None) -> int:
    """A version as the client names it; one we could never have issued is simply not found."""
    if raw is None:
        raise BackupError(400, "M_MISSING_PARAM", "Missing 'version'")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise not_found()
    return int(raw)


def _int(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise invalid(f"'{name}' must be a non-negative integer")
    return value


def parse_key(room_id: str, session_id: str, data: Any) -> RoomKey:
    """A KeyBackupData object."""
    if not isinstance(data, dict):
        raise invalid("key backup data must be an object")
    if not isinstance(data.get("is_verified"), bool):
        raise invalid("'is_verified' must be a boolean")
    if not isinstance(data.get("session_data"), dict):
        raise invalid("'session_data' must be an object")
    return RoomKey(
        room_id,
        session_id,
        _int(data.get("first_message_index"), "first_message_index"),
        _int(data.get("forwarded_count"), "forwarded_count"),
        data["is_verified"],
        data["session_data"],
    )


def parse_sessions(room_id: str, body: Any) -> list[RoomKey]:
    sessions = body.get("sessions") if isinstance(body, dict) else None
    if not isinstance(sessions, dict):
        raise invalid("'sessions' must be an object")
    return [parse_key(room_id, session_id, data) for session_id, data in sessions.items()]


def parse_rooms(body: Any) -> list[RoomKey]:
    rooms = body.get("rooms") if isinstance(body, dict) else None
    if not isinstance(rooms, dict):
        raise invalid("'rooms' must be an object")
    keys: list[RoomKey] = []
    for room_id, room in rooms.items():
        keys += parse_sessions(room_id, room)
    return keys


class KeyBackups:
    def __init__(self, storage: HasKeyBackup) -> None:
        self._store = storage.key_backup

    # -- versions -------------------------------------------------------------------------------------

    async def create(self, user_id: str, body: dict[str, Any]) -> str:
        algorithm, auth_data = body.get("algorithm"), body.get("auth_data")
        if not isinstance(algorithm, str) or not isinstance(auth_data, dict):
            raise invalid("'algorithm' (a string) and 'auth_data' (an object) are required")
        return str(await self._store.create_version(user_id, algorithm, auth_data))

    async def get(self, user_id: str, raw_version: str | None) -> dict[str, Any]:
        version = None if raw_version is None else parse_version(raw_version)
        info = await self._store.get_version(user_id, version)
        if info is None:
            raise not_found("No current backup version" if version is None else "Unknown backup version")
        return {
            "algorithm": info.algorithm,
            "auth_data": info.auth_data,
            "count": info.count,
            "etag": str(info.etag),
            "version": str(info.version),
        }

    async def update(self, user_id: str, raw_version: str, body: dict[str, Any]) -> None:
        version = parse_version(raw_version)
        info = await self._store.get_version(user_id, version)
        if info is None:
            raise not_found()
        if "version" in body and body["version"] != raw_version:
            raise invalid("The version in the body does not match the one in the path")
        if body.get("algorithm") != info.algorithm:
            raise invalid("Algorithm does not match")
        if not isinstance(body.get("auth_data"), dict):
            raise invalid("'auth_data' must be an object")
        await self._store.update_version(user_id, version, body["auth_data"])

    async def delete(self, user_id: str, raw_version: str) -> None:
        if not await self._store.delete_version(user_id, parse_version(raw_version)):
            raise not_found()

    # -- keys -----------------------------------------------------------------------------------------

    async def put(self, user_id: str, raw_version: str | None, keys: list[RoomKey]) -> dict[str, Any]:
        version = parse_version(raw_version)
        current = await self._store.get_version(user_id)
        if current is None:
            raise not_found("No current backup version")
        if current.version != version:
            if await self._store.get_version(user_id, version) is None and version > current.version:
                raise not_found()
            raise BackupError(
                403,
                "M_WRONG_ROOM_KEYS_VERSION",
                "Wrong backup version.",
                current_version=str(current.version),
            )
        etag, count = await self._store.put_keys(user_id, version, keys)
        return {"etag": str(etag), "count": count}

    async def get_keys(
        self, user_id: str, raw_version: str | None, room_id: str | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        version = await self._existing(user_id, raw_version)
        keys = await self._store.get_keys(user_id, version, room_id, session_id)
        if session_id is not None:
            if not keys:
                raise not_found("No room key found")
            return keys[0].to_json()
        sessions: dict[str, dict[str, Any]] = {}
        rooms: dict[str, Any] = {}
        for key in keys:
            rooms.setdefault(key.room_id, {"sessions": {}})["sessions"][key.session_id] = key.to_json()
            sessions[key.session_id] = key.to_json()
        if room_id is not None:
            return {"sessions": sessions}
        return {"rooms": rooms}

    async def delete_keys(
        self, user_id: str, raw_version: str | None, room_id: str | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        version = await self._existing(user_id, raw_version)
        etag, count = await self._store.delete_keys(user_id, version, room_id, session_id)
        return {"etag": str(etag), "count": count}

    async def _existing(self, user_id: str, raw_version: str | None) -> int:
        version = parse_version(raw_version)
        if await self._store.get_version(user_id, version) is None:
            raise not_found()
        return version
