"""Device keys, one-time and fallback keys, cross-signing keys and signatures (CS "End-to-End Encryption"),
for local users directly and for remote users through their servers (S2S "End-to-End Encryption":
``POST /user/keys/query`` and ``/user/keys/claim``), or from the cached device lists of users who share a
room with one of ours (see device_lists.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from ..federation.client import FederationError
from ..storage.protocols.composite import HasDeviceLists, HasE2eKeys
from ..storage.sql.e2ee_keys import KeyConflict, OneTimeKey
from .device_lists import DeviceLists, _server
from .validation import (
    KeyError_,
    check_device_keys,
    check_one_time_keys,
    cross_signing_public_key,
    verify,
)

logger = logging.getLogger(__name__)

FALLBACK_FIELDS = ("fallback_keys", "org.matrix.msc2732.fallback_keys")
CROSS_SIGNING_TYPES = ("master", "self_signing", "user_signing")
DEFAULT_REMOTE_TIMEOUT_S = 10.0


class KeyServiceStorage(HasE2eKeys, HasDeviceLists, Protocol):
    """What devices/keys.py asks of storage."""


class KeyService:
    def __init__(
        self, storage: KeyServiceStorage, device_lists: DeviceLists, federation_client: Any = None
    ) -> None:
        self._storage = storage
        self._keys = storage.e2e_keys
        self._lists = device_lists
        self._client = federation_client

    # -- upload ---------------------------------------------------------------------------------------

    async def upload(self, user_id: str, device_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /keys/upload``; raises ``KeyError_`` for invalid input (nothing is stored then)."""
        ed_key: str | None = None
        device_keys = body.get("device_keys")
        if device_keys is not None:
            checked = check_device_keys(device_keys, user_id, device_id)
            ed_key = checked["keys"][f"ed25519:{device_id}"]
        else:
            stored = await self._keys.get_device_keys(user_id, device_id)
            if stored is not None:
                ed_key = stored.get("keys", {}).get(f"ed25519:{device_id}")
        one_time = check_one_time_keys(
            _optional(body, "one_time_keys"), user_id, device_id, ed_key, "one_time_keys"
        )
        fallback: list[tuple[str, str, Any]] = []
        for name in FALLBACK_FIELDS:
            fallback += check_one_time_keys(_optional(body, name), user_id, device_id, ed_key, name)
        try:
            # First, as the one step that can still fail (a key id reused with other content): then a
            # refused upload stores nothing.
            await self._keys.add_one_time_keys(
                user_id, device_id, [OneTimeKey(a, i, k) for a, i, k in one_time]
            )
        except KeyConflict as e:
            raise KeyError_(str(e)) from None
        if device_keys is not None and await self._keys.set_device_keys(user_id, device_id, device_keys):
            await self._lists.on_local_change(user_id, [device_id])
        for algorithm, ident, key in fallback:
            await self._keys.set_fallback_key(user_id, device_id, OneTimeKey(algorithm, ident, key))
        counts = await self._keys.count_one_time_keys(user_id, device_id)
        # Clients read a missing count as 0 anyway; Synapse always lists signed_curve25519, and some
        # clients only look there.
        counts.setdefault("signed_curve25519", 0)
        return {"one_time_key_counts": counts}

    # -- query ----------------------------------------------------------------------------------------

    async def query(
        self, requester: str | None, wanted: dict[str, list[str]], timeout_s: float = DEFAULT_REMOTE_TIMEOUT_S
    ) -> dict[str, Any]:
        """``/keys/query`` (``requester`` set) and ``/user/keys/query`` (None: a remote server asking,
        local users only, no user-signing keys)."""
        out: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}, "failures": {}}
        if requester is not None:
            out["user_signing_keys"] = {}
        local = {u: d for u, d in wanted.items() if self._lists.is_local(u)}
        remote: dict[str, dict[str, list[str]]] = {}
        for user_id, devices in wanted.items():
            server = _server(user_id)
            if server is not None and not self._lists.is_local(user_id):
                remote.setdefault(server, {})[user_id] = devices
        await self._query_local(requester, local, out)
        if requester is not None and remote:
            await asyncio.gather(*(self._query_server(s, u, out, timeout_s) for s, u in remote.items()))
            # The requester's own signatures (by their user-signing key) of remote users' master keys.
            remote_users = [u for users in remote.values() for u in users]
            sigs = await self._keys.get_signatures(remote_users)
            for user_id in remote_users:
                master = out["master_keys"].get(user_id)
                if isinstance(master, dict):
                    mine = [s for s in sigs.get((user_id, _public_key(master)), []) if s[0] == requester]
                    _merge_signatures(master, mine)
        return out

    async def _query_local(
        self, requester: str | None, wanted: dict[str, list[str]], out: dict[str, Any]
    ) -> None:
        if not wanted:
            return
        all_keys = await self._keys.get_devices_with_keys(wanted)
        sigs = await self._keys.get_signatures(wanted)
        for user_id, devices in wanted.items():
            keys = all_keys.get(user_id, {})
            chosen = {d: k for d, k in keys.items() if not devices or d in devices}
            for device_id, device_keys in chosen.items():
                _merge_signatures(device_keys, sigs.get((user_id, device_id), []))
                if requester is None and not self._lists.share_device_names:
                    # A remote server asking (/user/keys/query): no device names unless allowed.
                    unsigned = device_keys.get("unsigned")
                    if isinstance(unsigned, dict):
                        unsigned.pop("device_display_name", None)
                        if not unsigned:
                            device_keys.pop("unsigned")
            out["device_keys"][user_id] = chosen
            await self._add_cross_signing(requester, user_id, sigs, out)

    async def _add_cross_signing(
        self,
        requester: str | None,
        user_id: str,
        sigs: dict[tuple[str, str], list[tuple[str, str, str]]],
        out: dict[str, Any],
    ) -> None:
        cross = await self._keys.get_cross_signing_keys(user_id)
        master = cross.get("master")
        if master is not None:
            public = _public_key(master)
            # CS "Cross-signing": a signature of someone's master key by a user-signing key is seen only by
            # the user who made it; the owner's own signatures (by their devices) are seen by everyone.
            visible = [s for s in sigs.get((user_id, public), []) if s[0] in (user_id, requester)]
            out["master_keys"][user_id] = _merge_signatures(master, visible)
        if "self_signing" in cross:
            out["self_signing_keys"][user_id] = cross["self_signing"]
        if requester == user_id and "user_signing" in cross:
            out["user_signing_keys"][user_id] = cross["user_signing"]

    async def _query_server(
        self, server: str, users: dict[str, list[str]], out: dict[str, Any], timeout_s: float
    ) -> None:
        ask: dict[str, list[str]] = {}
        for user_id, devices in users.items():
            if await self._cached_remote(user_id, devices, out, timeout_s):
                continue
            ask[user_id] = devices
        if not ask:
            return
        answer = await self._ask_server(server, "query", {"device_keys": ask}, out, timeout_s)
        if answer is None:
            return
        for field in ("device_keys", "master_keys", "self_signing_keys"):
            got = answer.get(field)
            if isinstance(got, dict):
                for user_id, value in got.items():
                    if user_id in ask and isinstance(value, dict):
                        out[field][user_id] = value

    async def _cached_remote(
        self, user_id: str, devices: list[str], out: dict[str, Any], timeout_s: float
    ) -> bool:
        """Answer from the cache when we track the user (they share a room with one of ours); a list
        never fetched or marked stale is fetched whole first. False: ask their server instead."""
        if not await self._lists.shares_room_with_local_user(user_id):
            await self._storage.device_lists.forget_remote(user_id)
            return False
        cached = await self._storage.device_lists.get_remote_list(user_id)
        if (cached is None or cached[1]) and not await self._lists.ensure_fresh(user_id, timeout_s):
            return False
        chosen: dict[str, Any] = {}
        for device in await self._storage.device_lists.get_remote_devices(user_id):
            if device.keys is None or (devices and device.device_id not in devices):
                continue
            keys = dict(device.keys)
            if device.display_name is not None:
                keys["unsigned"] = {"device_display_name": device.display_name}
            chosen[device.device_id] = keys
        out["device_keys"][user_id] = chosen
        cross = await self._keys.get_cross_signing_keys(user_id)
        if "master" in cross:
            out["master_keys"][user_id] = cross["master"]
        if "self_signing" in cross:
            out["self_signing_keys"][user_id] = cross["self_signing"]
        return True

    # -- claim ----------------------------------------------------------------------------------------

    async def claim(
        self,
        wanted: dict[str, dict[str, str]],
        *,
        local_only: bool = False,
        timeout_s: float = DEFAULT_REMOTE_TIMEOUT_S,
    ) -> dict[str, Any]:
        """``/keys/claim``: per device a one-time key of the algorithm, else its fallback key."""
        out: dict[str, Any] = {"one_time_keys": {}, "failures": {}}
        remote: dict[str, dict[str, dict[str, str]]] = {}
        local: list[tuple[str, str, str]] = []
        for user_id, devices in wanted.items():
            if self._lists.is_local(user_id):
                local += [(user_id, device_id, algorithm) for device_id, algorithm in devices.items()]
            elif not local_only and (server := _server(user_id)) is not None:
                remote.setdefault(server, {})[user_id] = devices
        for (user_id, device_id), key in (await self._keys.claim_keys(local)).items():
            by_device = out["one_time_keys"].setdefault(user_id, {})
            by_device[device_id] = {f"{key.algorithm}:{key.key_id}": key.key}
        if remote:
            await asyncio.gather(*(self._claim_server(s, w, out, timeout_s) for s, w in remote.items()))
        return out

    async def _claim_server(
        self, server: str, wanted: dict[str, dict[str, str]], out: dict[str, Any], timeout_s: float
    ) -> None:
        answer = await self._ask_server(server, "claim", {"one_time_keys": wanted}, out, timeout_s)
        got = answer.get("one_time_keys") if answer is not None else None
        if answer is not None and not isinstance(got, dict):
            out["failures"][server] = {"status": 502, "message": "invalid answer"}
            return
        for user_id, devices in (got or {}).items():
            if user_id in wanted and isinstance(devices, dict):
                out["one_time_keys"][user_id] = devices

    async def _ask_server(
        self, server: str, what: str, body: dict[str, Any], out: dict[str, Any], timeout_s: float
    ) -> dict[str, Any] | None:
        """``POST /user/keys/{what}`` to ``server``; None (with the reason in ``out["failures"]``, as
        /keys/query and /keys/claim report servers that failed) when there is no usable answer."""
        if self._client is None:
            out["failures"][server] = {"status": 503, "message": "federation is disabled"}
            return None
        try:
            answer = await self._client.request(
                "POST", server, f"/_matrix/federation/v1/user/keys/{what}", json_body=body, timeout=timeout_s
            )
        except FederationError as e:
            out["failures"][server] = {"status": e.status or 503, "message": str(e)}
            return None
        if not isinstance(answer, dict):
            out["failures"][server] = {"status": 502, "message": "invalid answer"}
            return None
        return answer

    # -- cross-signing --------------------------------------------------------------------------------

    async def cross_signing_needs_auth(self, user_id: str, body: dict[str, Any]) -> bool:
        """CS "POST /keys/device_signing/upload": no UIA when the user has no master key yet, or when the
        request only repeats the keys already stored."""
        stored = await self._keys.get_cross_signing_keys(user_id)
        if "master" not in stored:
            return False
        for key_type in CROSS_SIGNING_TYPES:
            given = body.get(f"{key_type}_key")
            if given is not None and stored.get(key_type) != given:
                return True
        return False

    async def upload_cross_signing(self, user_id: str, body: dict[str, Any]) -> None:
        stored = await self._keys.get_cross_signing_keys(user_id)
        new: dict[str, dict[str, Any]] = {}
        master = body.get("master_key")
        if master is not None:
            cross_signing_public_key(master, user_id, "master")
            new["master"] = master
        elif "master" not in stored:
            raise KeyError_("a master key is needed first", "M_MISSING_PARAM")
        master_public = _public_key(new.get("master") or stored["master"])
        for key_type in ("self_signing", "user_signing"):
            key = body.get(f"{key_type}_key")
            if key is None:
                continue
            cross_signing_public_key(key, user_id, key_type)
            verify(key, user_id, f"ed25519:{master_public}", master_public, f"{key_type}_key")
            new[key_type] = key
        if new and await self._keys.set_cross_signing_keys(user_id, new):
            await self._lists.on_local_signing_keys(user_id, new)

    async def upload_signatures(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /keys/signatures/upload``: signatures made by ``user_id``'s keys (a device key, its
        self-signing key on its own devices, its user-signing key on other users' master keys)."""
        failures: dict[str, dict[str, Any]] = {}
        rows: list[tuple[str, str, str, str, str]] = []
        signed_devices: list[str] = []
        signers = await self._signer_keys(user_id)
        own_devices = await self._own_device_ids(user_id)
        for target_user, by_key in body.items():
            if not isinstance(by_key, dict):
                continue
            for target_key, obj in by_key.items():
                try:
                    stored = await self._signed_target(target_user, target_key)
                    if stored is None:
                        raise KeyError_("no such key", "M_NOT_FOUND")
                    if not isinstance(obj, dict) or _strip(obj) != _strip(stored):
                        raise KeyError_("the signed object differs from the stored key")
                    signatures = obj.get("signatures")
                    mine = signatures.get(user_id) if isinstance(signatures, dict) else None
                    if not isinstance(mine, dict) or not mine:
                        raise KeyError_("no signature by the uploading user", "M_INVALID_SIGNATURE")
                    # CS "Cross-signing": one's own devices are signed by the self-signing key, one's own
                    # master key by one's devices, other users' master keys by the user-signing key.
                    is_device = target_user == user_id and target_key in own_devices
                    if is_device:
                        allowed = signers.get("self_signing", {})
                    elif target_user == user_id:
                        allowed = signers.get("devices", {})
                    else:
                        allowed = signers.get("user_signing", {})
                    verified = []
                    for key_id, sig in mine.items():
                        public = allowed.get(key_id)
                        if public is None:
                            raise KeyError_(f"{key_id} cannot sign this key", "M_INVALID_SIGNATURE")
                        verify(obj, user_id, key_id, public, f"{target_user} {target_key}")
                        verified.append((target_user, target_key, user_id, key_id, sig))
                    rows += verified
                    if is_device:
                        signed_devices.append(target_key)
                except KeyError_ as e:
                    failures.setdefault(target_user, {})[target_key] = {
                        "errcode": e.errcode,
                        "error": e.message,
                    }
        await self._keys.add_signatures(rows)
        if rows:
            if signed_devices:
                await self._lists.on_local_change(user_id, signed_devices)
            else:
                self._lists.wake()
        return {"failures": failures}

    async def _signer_keys(self, user_id: str) -> dict[str, dict[str, str]]:
        """The user's signing keys by kind (self_signing, user_signing, master, devices): key id -> key."""
        keys: dict[str, dict[str, str]] = {}
        for key_type, key in (await self._keys.get_cross_signing_keys(user_id)).items():
            public = _public_key(key)
            keys[key_type] = {f"ed25519:{public}": public}
        devices = keys.setdefault("devices", {})
        all_keys = await self._keys.get_devices_with_keys([user_id])
        for device_id, device_keys in all_keys.get(user_id, {}).items():
            public = device_keys.get("keys", {}).get(f"ed25519:{device_id}")
            if isinstance(public, str):
                devices[f"ed25519:{device_id}"] = public
        return keys

    async def _own_device_ids(self, user_id: str) -> set[str]:
        return set((await self._keys.get_devices_with_keys([user_id])).get(user_id, {}))

    async def _signed_target(self, user_id: str, key: str) -> dict[str, Any] | None:
        if self._lists.is_local(user_id):
            device_keys = await self._keys.get_device_keys(user_id, key)
            if device_keys is not None:
                return device_keys
        master = (await self._keys.get_cross_signing_keys(user_id)).get("master")
        if master is None and not self._lists.is_local(user_id):
            fetched = await self.query(user_id, {user_id: []})
            master = fetched["master_keys"].get(user_id)
        if isinstance(master, dict) and _public_key(master) == key:
            return master
        return None


def _optional(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    return {} if value is None else value


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def _public_key(key: dict[str, Any]) -> str:
    values = list(key.get("keys", {}).values())
    return str(values[0]) if values else ""


def _merge_signatures(obj: dict[str, Any], sigs: Iterable[tuple[str, str, str]]) -> dict[str, Any]:
    for signer, key_id, sig in sigs:
        obj.setdefault("signatures", {}).setdefault(signer, {})[key_id] = sig
    return obj
