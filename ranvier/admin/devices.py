"""A user's devices, administered in the shape of Synapse's admin API (server admins only):

- ``GET/POST /_synapse/admin/v2/users/{userId}/devices``: list; create one (``device_id``);
- ``GET/PUT/DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}``: details, rename, delete;
- ``POST /_synapse/admin/v2/users/{userId}/delete_devices`` (``devices``: a list of ids).

Deleting a device ends its sessions (access and refresh tokens) and removes its E2EE keys and to-device
inbox; other servers hear of it through the device-list updates (``storage.sql.devices``).
Ranvier does not record user agents, so ``last_seen_user_agent`` is left out.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from ..client_api.errors import invalid_param, not_found
from ..client_api.http_util import optional_str, read_json_body, require_str
from ..storage.protocols.accounts import Device
from ..storage.protocols.composite import HasDevices, HasUsers
from .access import AdminAccess, note

PREFIX = "/_synapse/admin/v2/users/{user_id}"


class DeviceAdminStorage(HasUsers, HasDevices, Protocol):
    """What admin/devices.py asks of storage."""


def _device_json(device: Device) -> dict[str, Any]:
    return {
        "user_id": device.user_id,
        "device_id": device.device_id,
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
    }


class DeviceAdminHandlers:
    def __init__(self, storage: DeviceAdminStorage, access: AdminAccess) -> None:
        self._storage = storage
        self._access = access

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(PREFIX + "/devices", self.list_devices),
            web.post(PREFIX + "/devices", self.create_device),
            web.get(PREFIX + "/devices/{device_id}", self.get_device),
            web.put(PREFIX + "/devices/{device_id}", self.rename_device),
            web.delete(PREFIX + "/devices/{device_id}", self.delete_device),
            web.post(PREFIX + "/delete_devices", self.delete_devices),
        ]

    async def _user(self, request: web.Request) -> str:
        user_id = self._access.require_local_user_id(request.match_info["user_id"])
        if await self._storage.users.get_user(user_id) is None:
            raise not_found("User not found")
        return user_id

    async def list_devices(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        user_id = await self._user(request)
        devices = [_device_json(d) for d in await self._storage.devices.list_devices(user_id)]
        return web.json_response({"devices": devices, "total": len(devices)})

    async def create_device(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        user_id = await self._user(request)
        body = await read_json_body(request)
        device_id = require_str(body, "device_id")
        if not device_id or len(device_id) > 255:
            raise invalid_param("'device_id' must be 1 to 255 characters")
        if await self._storage.devices.create_device(user_id, device_id, optional_str(body, "display_name")):
            note(admin, "created device", user_id=user_id, device_id=device_id)
        return web.json_response({}, status=201)

    async def get_device(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        user_id = await self._user(request)
        device = await self._storage.devices.get_device(user_id, request.match_info["device_id"])
        if device is None:
            raise not_found("No such device")
        return web.json_response(_device_json(device))

    async def rename_device(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        user_id = await self._user(request)
        device_id = request.match_info["device_id"]
        body = await read_json_body(request, allow_empty=True)
        if "display_name" in body:
            name = optional_str(body, "display_name")
            if not await self._storage.devices.rename_device(user_id, device_id, name):
                raise not_found("No such device")
            note(admin, "renamed device", user_id=user_id, device_id=device_id)
        elif await self._storage.devices.get_device(user_id, device_id) is None:
            raise not_found("No such device")
        return web.json_response({})

    async def delete_device(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        user_id = await self._user(request)
        device_id = request.match_info["device_id"]
        # Deleting a device that is already gone succeeds, as in Synapse.
        if await self._storage.devices.delete_device(user_id, device_id):
            note(admin, "deleted device", user_id=user_id, device_id=device_id)
        return web.json_response({})

    async def delete_devices(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        user_id = await self._user(request)
        body = await read_json_body(request)
        devices = body.get("devices")
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise invalid_param("'devices' must be a list of device ids")
        deleted = [d for d in devices if await self._storage.devices.delete_device(user_id, d)]
        note(admin, "deleted devices", user_id=user_id, device_ids=deleted)
        return web.json_response({})
