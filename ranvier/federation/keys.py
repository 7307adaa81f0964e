"""The keyring: our signing keys, and remote servers' verify keys (S2S "Retrieving server keys").

Remote keys come from, in order: memory, the durable ``KeyStore``, the server itself
(``GET /_matrix/key/v2/server``), then the configured notaries (``POST /_matrix/key/v2/query``). Every
response is checked before use: its ``server_name``, and its self-signature by the keys it lists.

Verification stays sans-I/O: ``prefetch`` the keys an event or request needs, then check signatures with the
synchronous ``lookup`` (a ``KeyLookup``).

Fetches are time-boxed (``fetch_timeout`` per request, a few seconds: a key server that accepts TCP and
never answers must not hold the request that needs its key for long). A failed fetch is retried on demand
after a short back-off with jitter (one second, doubling up to ``retry_max``), not a minute of negative
caching; a request signed by the server itself (``on_demand``: it is evidently up) fetches again at once,
at most once a second. ``fetch_failure`` says why the last fetch of a server failed, for error messages
that name the unreachable key server.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ranvier.protocol.errors import ProtocolError, SignatureError
from ranvier.protocol.events import VerifyKeyInfo
from ranvier.protocol.signing import SigningKey, decode_verify_key, sign_json, verify_json_signature

from ..clock import now_ms
from ..storage.sql.server_keys import StoredKeyResponse
from .client import DestinationUnreachable, FederationClient, FederationError

log = logging.getLogger(__name__)

KEY_SERVER_PATH = "/_matrix/key/v2/server"
KEY_QUERY_PATH = "/_matrix/key/v2/query"
# keys.yaml: "Servers MUST use the lesser of this field and 7 days into the future".
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000
# How long our own published responses are valid. Long enough that peers do not refetch constantly, short
# enough that a revoked key stops being trusted within a day; the spec asks for more than an hour.
OWN_KEYS_VALIDITY_MS = 24 * 3600 * 1000
# Do not ask one server for its keys more often than this when a key is still missing after a successful
# fetch (the spec asks requesting servers to limit how often they query).
MISSING_KEY_REFETCH_MS = 10 * 1000
# After a failed fetch: back off from this, doubling per consecutive failure up to ``retry_max``.
RETRY_MIN_MS = 1000
# A request signed by the server itself may refetch at once, but not more often than this (a flood of
# forged requests naming a server must not turn into a flood of fetches from it).
ON_DEMAND_MIN_INTERVAL_MS = 1000
DEFAULT_FETCH_TIMEOUT = 5.0
DEFAULT_RETRY_MAX = 30.0


class KeyStore(Protocol):
    """Durable remote-key storage (implemented by ``ranvier.storage``)."""

    async def get_server_keys(self, server: str, key_ids: Collection[str]) -> dict[str, StoredKeyResponse]:
        """For each requested key id we know: the newest stored response listing it (in ``verify_keys`` or
        ``old_verify_keys``). An empty ``key_ids`` asks for every key stored for ``server``."""
        ...

    async def store_server_keys(self, server: str, keys_json: dict[str, Any], valid_until_ts: int) -> None:
        """Persist a verified response, indexed by every key id it lists."""
        ...


class MemoryKeyStore:
    """A ``KeyStore`` kept in a dict; for tests and for running without a database."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], StoredKeyResponse] = {}

    async def get_server_keys(self, server: str, key_ids: Collection[str]) -> dict[str, StoredKeyResponse]:
        if not key_ids:
            return {k: v for (s, k), v in self._by_key.items() if s == server}
        return {k: self._by_key[(server, k)] for k in key_ids if (server, k) in self._by_key}

    async def store_server_keys(self, server: str, keys_json: dict[str, Any], valid_until_ts: int) -> None:
        for key_id in listed_key_ids(keys_json):
            old = self._by_key.get((server, key_id))
            if old is None or old.valid_until_ts <= valid_until_ts:
                self._by_key[(server, key_id)] = StoredKeyResponse(keys_json, valid_until_ts)


class KeyResponseError(ProtocolError):
    """A key response is malformed, for the wrong server, or not signed by its own keys."""

    errcode = "M_UNAUTHORIZED"


@dataclass(frozen=True)
class Notary:
    """A trusted key server; without ``verify_keys`` its keys are fetched from it directly."""

    server_name: str
    verify_keys: Mapping[str, str] | None = None  # key id -> unpadded base64


@dataclass(frozen=True)
class OldKey:
    key_id: str
    key_base64: str
    expired_ts: int


def listed_key_ids(keys_json: Mapping[str, Any]) -> list[str]:
    ids: list[str] = []
    for section in ("verify_keys", "old_verify_keys"):
        value = keys_json.get(section)
        if isinstance(value, dict):
            ids.extend(k for k in value if isinstance(k, str))
    return ids


def parse_key_response(
    keys_json: Any, expected_server: str, now_ms: int
) -> tuple[dict[str, VerifyKeyInfo], int]:
    """Check a ``/key/v2/server`` response and extract its keys; return them and the capped validity.

    The response must name ``expected_server`` and carry a valid signature by each of its ``verify_keys``
    that it signed with, at least one (S2S "Publishing Keys": the signatures use the verify_keys).
    Old keys are reported valid until their ``expired_ts``.
    """
    if not isinstance(keys_json, dict):
        raise KeyResponseError("key response is not an object")
    if keys_json.get("server_name") != expected_server:
        raise KeyResponseError(f"key response is for {keys_json.get('server_name')!r}, not {expected_server}")
    valid_until = keys_json.get("valid_until_ts")
    if type(valid_until) is not int:
        raise KeyResponseError("key response has no integer valid_until_ts")
    valid_until = min(valid_until, now_ms + MAX_KEY_VALIDITY_MS)
    verify_keys = keys_json.get("verify_keys")
    if not isinstance(verify_keys, dict):
        raise KeyResponseError("key response has no verify_keys object")
    keys: dict[str, VerifyKeyInfo] = {}
    for key_id, entry in verify_keys.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise KeyResponseError(f"verify key {key_id} is malformed")
        if not key_id.startswith("ed25519:"):
            continue  # unknown algorithms are not ours to use
        keys[key_id] = VerifyKeyInfo(decode_verify_key(entry["key"]), valid_until)
    signatures = keys_json.get("signatures", {})
    own_sigs = signatures.get(expected_server) if isinstance(signatures, dict) else None
    signed_with = [k for k in keys if isinstance(own_sigs, dict) and k in own_sigs]
    if not signed_with:
        raise KeyResponseError(f"key response of {expected_server} is not signed by any of its verify_keys")
    for key_id in signed_with:
        try:
            verify_json_signature(keys_json, expected_server, key_id, keys[key_id].key)
        except SignatureError as e:
            raise KeyResponseError(f"key response of {expected_server}: {e.message}") from e
    old = keys_json.get("old_verify_keys", {})
    if isinstance(old, dict):
        for key_id, entry in old.items():
            if key_id in keys or not key_id.startswith("ed25519:"):
                continue
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("key"), str)
                and type(entry.get("expired_ts")) is int
            ):
                try:
                    keys[key_id] = VerifyKeyInfo(decode_verify_key(entry["key"]), entry["expired_ts"])
                except SignatureError:
                    continue
    return keys, valid_until


@dataclass
class _Cached:
    keys: dict[str, VerifyKeyInfo] = field(default_factory=dict)
    responses: dict[str, StoredKeyResponse] = field(default_factory=dict)  # by key id
    last_fetch_ms: int = -(10**15)  # when the last fetch started
    retry_at_ms: int = -(10**15)  # no new fetch before this, except on demand
    failures: int = 0  # consecutive failed fetches
    last_error: str | None = None  # why the last fetch failed; None after a success


# Servers whose keys (and fetch back-off) are kept in memory; beyond it the earliest remembered are forgotten
# (their keys stay in the database, read again when needed). Each costs a few hundred bytes.
MAX_CACHED_SERVERS = 10_000


class Keyring:
    def __init__(
        self,
        server_name: str,
        signing_keys: Sequence[SigningKey],
        *,
        old_keys: Iterable[OldKey] = (),
        client: FederationClient | None = None,
        store: KeyStore | None = None,
        notaries: Sequence[Notary] = (),
        clock_ms: Callable[[], int] = now_ms,
        fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
        retry_max: float = DEFAULT_RETRY_MAX,
        rng: random.Random | None = None,
        max_cached_servers: int = MAX_CACHED_SERVERS,
    ) -> None:
        if not signing_keys:
            raise ValueError("a keyring needs at least one signing key")
        self.server_name = server_name
        self.signing_keys = list(signing_keys)
        self.old_keys = list(old_keys)
        self._client = client
        self._store = store
        self._notaries = list(notaries)
        self._clock_ms = clock_ms
        self.fetch_timeout = fetch_timeout
        self._retry_max_ms = int(retry_max * 1000)
        self._rng = rng or random.Random()
        # Insertion-ordered; read without reordering, as ``lookup`` runs in verification worker threads too.
        self._cache: dict[str, _Cached] = {}
        self._max_cached_servers = max(1, max_cached_servers)
        self._inflight: dict[str, asyncio.Task[None]] = {}

    @property
    def signing_key(self) -> SigningKey:
        """The key we sign with now (the first configured)."""
        return self.signing_keys[0]

    # -- our own keys --------------------------------------------------------------------------------

    def own_key_response(self) -> dict[str, Any]:
        """Our ``/key/v2/server`` response, signed by every current key."""
        obj: dict[str, Any] = {
            "server_name": self.server_name,
            "verify_keys": {k.key_id: {"key": k.public_key_base64} for k in self.signing_keys},
            "old_verify_keys": {
                o.key_id: {"key": o.key_base64, "expired_ts": o.expired_ts} for o in self.old_keys
            },
            "valid_until_ts": self._clock_ms() + OWN_KEYS_VALIDITY_MS,
        }
        for key in self.signing_keys:
            sign_json(obj, self.server_name, key)
        return obj

    def _own_key(self, key_id: str) -> VerifyKeyInfo | None:
        for k in self.signing_keys:
            if k.key_id == key_id:
                return VerifyKeyInfo(k.verify_key, None)
        for o in self.old_keys:
            if o.key_id == key_id:
                return VerifyKeyInfo(decode_verify_key(o.key_base64), o.expired_ts)
        return None

    # -- remote keys ---------------------------------------------------------------------------------

    def lookup(self, server: str, key_id: str) -> VerifyKeyInfo | None:
        """Synchronous ``KeyLookup`` over what is already known (ours, and what was fetched)."""
        if server == self.server_name:
            return self._own_key(key_id)
        cached = self._cache.get(server)
        return cached.keys.get(key_id) if cached is not None else None

    def _entry(self, server: str) -> _Cached:
        """``server``'s cache entry, made if needed; the earliest made are forgotten beyond the bound."""
        cached = self._cache.get(server)
        if cached is None:
            cached = self._cache[server] = _Cached()
            while len(self._cache) > self._max_cached_servers:
                del self._cache[next(iter(self._cache))]
        return cached

    def fetch_failure(self, server: str) -> str | None:
        """Why the last fetch of ``server``'s keys failed (naming the key server and what went wrong), or
        ``None`` when it succeeded or none was tried."""
        cached = self._cache.get(server)
        return cached.last_error if cached is not None else None

    async def get_verify_key(
        self, server: str, key_id: str, min_valid_until_ts: int = 0, *, on_demand: bool = False
    ) -> VerifyKeyInfo | None:
        """The key, fetching it if unknown or not valid until ``min_valid_until_ts``; ``None`` if nobody
        could tell us. A key that is known but expires too early is still returned when no fresher one
        can be had: whether it suffices depends on the room version, which the caller knows.

        ``on_demand``: the need comes from the server itself (a request it signed, an answer it just
        sent), so a back-off after a failed fetch is cut short (see ``ON_DEMAND_MIN_INTERVAL_MS``)."""
        if server == self.server_name:
            return self._own_key(key_id)
        if self._good_enough(server, key_id, min_valid_until_ts):
            return self.lookup(server, key_id)
        await self._load_from_store(server, [key_id])
        if self._good_enough(server, key_id, min_valid_until_ts):
            return self.lookup(server, key_id)
        await self._fetch_once(server, key_id, min_valid_until_ts, on_demand)
        return self.lookup(server, key_id)

    async def prefetch(
        self, requests: Iterable[tuple[str, str]], min_valid_until_ts: int = 0, *, on_demand: bool = False
    ) -> None:
        """Fetch, concurrently per server, every (server, key id) not yet known; then ``lookup`` works."""
        by_server: dict[str, set[str]] = {}
        for server, key_id in requests:
            if server != self.server_name and not self._good_enough(server, key_id, min_valid_until_ts):
                by_server.setdefault(server, set()).add(key_id)

        async def one_server(server: str, key_ids: set[str]) -> None:
            for key_id in sorted(key_ids):
                await self.get_verify_key(server, key_id, min_valid_until_ts, on_demand=on_demand)

        await asyncio.gather(*(one_server(s, ids) for s, ids in by_server.items()))

    async def get_key_responses(self, server: str, min_valid_until_ts: int = 0) -> list[dict[str, Any]]:
        """The signed responses we hold for ``server`` (for answering notary queries), fetching from the
        server directly when none is valid until ``min_valid_until_ts``. Notaries never ask notaries."""
        if server == self.server_name:
            return [self.own_key_response()]
        await self._load_from_store(server, [])
        if not self._satisfied(server, None, min_valid_until_ts):
            await self._fetch_once(server, None, min_valid_until_ts, False)
        return [r.keys_json for r in self._responses(server)]

    def _responses(self, server: str) -> list[StoredKeyResponse]:
        cached = self._cache.get(server)
        if cached is None:
            return []
        unique = {id(r.keys_json): r for r in cached.responses.values()}
        return list(unique.values())

    def _good_enough(self, server: str, key_id: str, min_valid_until_ts: int) -> bool:
        info = self.lookup(server, key_id)
        return info is not None and (info.valid_until_ts is None or info.valid_until_ts >= min_valid_until_ts)

    def _satisfied(self, server: str, key_id: str | None, min_valid_until_ts: int) -> bool:
        """``key_id`` None: any response of the server valid until ``min_valid_until_ts`` will do."""
        if key_id is not None:
            return self._good_enough(server, key_id, min_valid_until_ts)
        return any(r.valid_until_ts >= min_valid_until_ts for r in self._responses(server))

    async def _load_from_store(self, server: str, key_ids: Collection[str]) -> None:
        if self._store is None:
            return
        stored = await self._store.get_server_keys(server, key_ids)
        for response in {id(r.keys_json): r for r in stored.values()}.values():
            try:
                keys, _ = parse_key_response(response.keys_json, server, self._clock_ms())
            except (KeyResponseError, SignatureError) as e:
                log.warning("ignoring a stored key response of %s: %s", server, e)
                continue
            self._remember(server, response, keys)

    def _remember(self, server: str, response: StoredKeyResponse, keys: Mapping[str, VerifyKeyInfo]) -> None:
        cached = self._entry(server)
        for key_id, info in keys.items():
            old = cached.keys.get(key_id)
            if (
                old is not None
                and (old.valid_until_ts or 0) > (info.valid_until_ts or 0)
                and old.key == info.key
            ):
                continue
            # Stored responses carry the capped validity; old keys keep their expired_ts.
            is_current = key_id in response.keys_json.get("verify_keys", {})
            capped = (
                min(info.valid_until_ts or 0, response.valid_until_ts) if is_current else info.valid_until_ts
            )
            cached.keys[key_id] = VerifyKeyInfo(info.key, capped)
            cached.responses[key_id] = response

    async def _fetch_once(
        self, server: str, key_id: str | None, min_valid_until_ts: int, on_demand: bool
    ) -> None:
        """Direct fetch then notaries (``key_id`` None: direct only), one at a time per server, and not
        again before the back-off is over (unless ``on_demand``)."""
        running = self._inflight.get(server)
        if running is not None:
            # A fetch is under way: its outcome is as fresh as any, so wait for it rather than start one.
            await asyncio.shield(running)
            return
        cached = self._entry(server)
        now = self._clock_ms()
        if now < cached.retry_at_ms:
            if not on_demand:
                return
            wait_ms = ON_DEMAND_MIN_INTERVAL_MS - (now - cached.last_fetch_ms)
            if wait_ms > 0:
                # The server itself needs us to have its key (it signed what we hold), so it is evidently
                # up: wait out the floor rather than fail the request, then fetch, unless a fetch made
                # meanwhile (by another request waiting like this one) already settled it.
                last = cached.last_fetch_ms
                await asyncio.sleep(wait_ms / 1000)
                running = self._inflight.get(server)
                if running is not None:
                    await asyncio.shield(running)
                    return
                if cached.last_fetch_ms != last:
                    return
        task = asyncio.ensure_future(self._fetch_all_sources(server, key_id, min_valid_until_ts))
        self._inflight[server] = task
        try:
            await asyncio.shield(task)
        finally:
            if self._inflight.get(server) is task:
                del self._inflight[server]

    async def _fetch_all_sources(self, server: str, key_id: str | None, min_valid_until_ts: int) -> None:
        cached = self._entry(server)
        cached.last_fetch_ms = self._clock_ms()
        errors: list[str] = []
        answered = False
        direct_error = await self._fetch_direct(server)
        if direct_error is None:
            answered = True
        else:
            errors.append(direct_error)
        if key_id is not None and not self._good_enough(server, key_id, min_valid_until_ts):
            for notary in self._notaries:
                if notary.server_name == server:
                    continue
                notary_error = await self._fetch_via_notary(notary, server, key_id, min_valid_until_ts)
                if notary_error is None:
                    answered = True
                else:
                    errors.append(notary_error)
                if self._good_enough(server, key_id, min_valid_until_ts):
                    break
        now = self._clock_ms()
        if answered:
            cached.failures = 0
            cached.last_error = None
            cached.retry_at_ms = now + MISSING_KEY_REFETCH_MS
            return
        # Nobody answered: back off briefly (doubling, bounded, jittered so that many servers that failed
        # together are not all retried in the same instant).
        cached.failures += 1
        backoff = min(self._retry_max_ms, RETRY_MIN_MS << min(cached.failures - 1, 20))
        cached.retry_at_ms = now + int(backoff * self._rng.uniform(0.5, 1.0))
        cached.last_error = f"could not fetch the signing keys of {server}: " + "; ".join(errors)
        log.info(
            "%s (retrying in %.1fs at the earliest)", cached.last_error, (cached.retry_at_ms - now) / 1000
        )

    async def _fetch_direct(self, server: str) -> str | None:
        """Fetch ``server``'s keys from itself; ``None`` when it answered with a valid response, else
        what went wrong."""
        if self._client is None:
            return "no federation client"
        try:
            response = await self._client.request(
                "GET", server, KEY_SERVER_PATH, authenticate=False, timeout=self.fetch_timeout
            )
            await self._accept(server, response)
            return None
        except FederationError as e:
            return f"its key server {self._failure_text(e)}"
        except (KeyResponseError, SignatureError) as e:
            return f"its key server sent an invalid response ({e})"

    def _failure_text(self, e: FederationError) -> str:
        if isinstance(e, DestinationUnreachable):
            if e.timed_out:
                return f"did not answer within {self.fetch_timeout:g}s"
            return f"could not be reached ({e.reason})"
        return f"answered {e.status} {e.errcode or ''} {e.message[:200]}".replace("  ", " ")

    async def _fetch_via_notary(
        self, notary: Notary, server: str, key_id: str, min_valid_until_ts: int
    ) -> str | None:
        """Ask ``notary`` for ``server``'s key; ``None`` when it answered, else what went wrong."""
        if self._client is None:
            return "no federation client"
        criteria = {"minimum_valid_until_ts": max(min_valid_until_ts, self._clock_ms())}
        body = {"server_keys": {server: {key_id: criteria}}}
        try:
            notary_keys = await self._notary_keys(notary)
            answer = await self._client.request(
                "POST",
                notary.server_name,
                KEY_QUERY_PATH,
                json_body=body,
                authenticate=False,
                timeout=self.fetch_timeout,
            )
        except FederationError as e:
            return f"notary {notary.server_name} {self._failure_text(e)}"
        responses = answer.get("server_keys") if isinstance(answer, dict) else None
        if not isinstance(responses, list):
            return f"notary {notary.server_name} sent no server_keys list"
        for response in responses:
            if not isinstance(response, dict) or response.get("server_name") != server:
                continue
            try:
                _check_notary_signature(response, notary.server_name, notary_keys)
                await self._accept(server, response)
            except (KeyResponseError, SignatureError) as e:
                log.info("notary %s sent a bad key response for %s: %s", notary.server_name, server, e)
        return None

    async def _notary_keys(self, notary: Notary) -> dict[str, VerifyKeyInfo]:
        if notary.verify_keys is not None:
            return {k: VerifyKeyInfo(decode_verify_key(v), None) for k, v in notary.verify_keys.items()}
        await self._load_from_store(notary.server_name, [])
        if not self._responses(notary.server_name):
            await self._fetch_once(notary.server_name, None, 0, False)
        cached = self._cache.get(notary.server_name)
        return dict(cached.keys) if cached is not None else {}

    async def _accept(self, server: str, keys_json: Any) -> None:
        keys, valid_until = parse_key_response(keys_json, server, self._clock_ms())
        response = StoredKeyResponse(keys_json, valid_until)
        if self._store is not None:
            await self._store.store_server_keys(server, keys_json, valid_until)
        self._remember(server, response, keys)


def _check_notary_signature(
    response: Mapping[str, Any], notary: str, notary_keys: Mapping[str, VerifyKeyInfo]
) -> None:
    sigs = response.get("signatures")
    by_notary = sigs.get(notary) if isinstance(sigs, dict) else None
    if not isinstance(by_notary, dict):
        raise KeyResponseError(f"response is not signed by notary {notary}")
    for key_id in by_notary:
        info = notary_keys.get(key_id)
        if info is not None:
            verify_json_signature(response, notary, key_id, info.key)
            return
    raise KeyResponseError(f"response is not signed by a known key of notary {notary}")
