"""What the federation side of E2EE asks of this package: the answers to the ``/user/...`` routes
(federation/e2ee_routes.py) and the EDUs of an incoming transaction."""

from __future__ import annotations

from typing import Any

from .device_lists import DeviceLists
from .keys import KeyService
from .to_device import ToDeviceService


class E2eeFederation:
    def __init__(self, keys: KeyService, device_lists: DeviceLists, to_device: ToDeviceService) -> None:
        self._keys = keys
        self._lists = device_lists
        self._to_device = to_device

    def is_local(self, user_id: str) -> bool:
        return self._lists.is_local(user_id)

    async def local_device_list(self, user_id: str) -> dict[str, Any]:
        return await self._lists.local_device_list(user_id)

    async def query_local_keys(self, wanted: dict[str, list[str]]) -> dict[str, Any]:
        answer = await self._keys.query(None, wanted)
        answer.pop("failures", None)
        return answer

    async def claim_local_keys(self, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
        return {"one_time_keys": (await self._keys.claim(wanted, local_only=True))["one_time_keys"]}

    def edu_handlers(self) -> dict[str, Any]:
        """edu_type -> ``async (origin, content)``, for rooms.incoming_edus."""
        return {
            "m.direct_to_device": self._to_device.on_direct_to_device,
            "m.device_list_update": self._lists.on_device_list_update,
            "m.signing_key_update": self._lists.on_signing_key_update,
        }
