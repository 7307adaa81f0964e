"""A real Ranvier on loopback for the fuzzer, with a world of real ids to aim at.

The homeserver runs in-process on an event loop of its own in a background thread, so that Hypothesis
(synchronous) can drive it: each example is one HTTP request, sent from that loop and waited for here.

What is set up: a registered user in a public room (with an alias, a topic, messages, a second local member
and a filter), a room that user is *not* in, and a fake remote server (its own signing key, TLS and key
routes on loopback) whose user really joined the room with make_join/send_join. Client-server requests
carry the user's token (or none, or a garbage one); server-server requests carry real X-Matrix
signatures of that remote server (or none, a garbage header, a wrong key, another origin).

The server never federates off this machine: every address but loopback is on its IP blocklist, and
aiohttp's own connection timeouts cap what the remaining loopback traffic can take.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import asyncpg
import yarl

from ranvier.app import Homeserver
from ranvier.config import parse_config
from ranvier.federation.x_matrix import XMatrixAuth, format_x_matrix, request_json
from ranvier.protocol.canonical_json import encode_canonical_json
from ranvier.protocol.errors import CanonicalJsonError
from ranvier.protocol.events import Pdu, build_event
from ranvier.protocol.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from ranvier.protocol.signing import SigningKey
from tests.ports import free_port
from tests.scenarios.inbound_driver import Driver, auth_events_for, current_state_events, start_driver

from .requests import FuzzRequest, PduSpec
from .values import World

T = TypeVar("T")
# Above the servers' default long-poll wait (30 s, when an optional timeout is left out) and their 60 s cap.
REQUEST_TIMEOUT = 75.0
PG_ADMIN_DSN = os.environ.get("RANVIER_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
# State the harness puts back after the fuzzer changed it, so that later examples still reach the room.
RESTORED_STATE = (
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.server_acl",
)


@dataclass
class Answer:
    status: int  # 0: no HTTP answer (connection error or timeout)
    body: bytes
    error: str = ""

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None


class ErrorLog(logging.Handler):
    """Errors the server logs (ERROR and above, with the exception if any): an exception swallowed while
    handling a request, a per-PDU or per-EDU failure, a task that died. Each is (message template, text)."""

    LOGGERS = ("ranvier", "asyncio", "aiohttp")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            # Where in Ranvier it happened: the deepest frame of ours (not asyncpg's or aiohttp's).
            frames = [f for f in traceback.extract_tb(error.__traceback__) if "/ranvier/" in f.filename]
            calls = [f"{f.filename.rsplit('/ranvier/', 1)[1]}:{f.lineno}" for f in frames[-4:]]
            where = f" in ranvier/ {' < '.join(reversed(calls))}" if calls else ""
            text += f" ({type(error).__name__}: {str(error)[:300]}{where})"
        self.records.append((f"{record.name}: {record.msg}", text))

    def attach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)

    def take(self) -> list[tuple[str, str]]:
        taken, self.records = self.records, []
        return taken


class FuzzHarness:
    def __init__(self, data_dir: Path | None = None, database_url: str | None = None) -> None:
        """``database_url``: where the server keeps its data (SQLite in ``data_dir`` by default)."""
        self.database_url = database_url
        self._tmp = None if data_dir is not None else tempfile.TemporaryDirectory(prefix="ranvier-fuzz-")
        self.data_dir = data_dir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.world = World()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server", daemon=True)
        self.hs: Homeserver
        self.driver: Driver
        self.session: aiohttp.ClientSession
        self.token = ""
        self.user_id = ""
        self.room_id = ""
        self.remote_user = ""
        self.private_room = ""
        self._baseline: dict[tuple[str, str], Any] = {}
        self.victim_token = ""
        self._victims = 0
        self._txn_counter = 0
        self.lost_token: list[FuzzRequest] = []  # requests after which the user's token no longer worked
        self._wrong_key = SigningKey.generate("t1")
        self.errors = ErrorLog()

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())
        self.errors.take()  # what set-up logged is not the fuzzer's doing
        self.errors.attach()

    def stop(self) -> None:
        self.errors.detach()
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)
            if self._tmp is not None:
                self._tmp.cleanup()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        fed_port = free_port()
        hs_dir = self.data_dir / "hs"
        config = parse_config(
            {
                "server_name": f"127.0.0.1:{fed_port}",
                "data_dir": str(hs_dir),
                "signing_key_path": str(hs_dir / "signing.key"),
                "database": {"url": self.database_url or f"sqlite:///{hs_dir / 'homeserver.db'}"},
                "log_level": "WARNING",
                "listeners": {
                    "client": {"bind": "127.0.0.1", "port": 0},
                    "federation": {"bind": "127.0.0.1", "port": fed_port, "tls": True},
                },
                "registration": {"enabled": True},
                # Loopback only: every other address is blocked, so names in generated input
                # (example.org, ...) are never reached.
                "federation": {
                    "verify_tls": False,
                    "allow_loopback": True,
                    "ip_range_blocklist": ["0.0.0.0/0", "::/0"],
                },
                "rate_limits": {"enabled": False},
            }
        )
        self.hs = Homeserver(config)
        await self.hs.start()
        self.driver = await start_driver(self.data_dir)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False, limit=4))
        await self._populate()

    async def _stop(self) -> None:
        await self.session.close()
        await self.driver.close()
        await self.hs.stop()

    # -- the world -------------------------------------------------------------------------------------

    @property
    def client_base(self) -> str:
        return f"http://127.0.0.1:{self.hs.ports['client']}"

    @property
    def federation_base(self) -> str:
        return f"https://127.0.0.1:{self.hs.ports['federation']}"

    async def _cs(self, method: str, path: str, token: str | None, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.client_base + "/_matrix/client/v3" + path, json=body, headers=headers
        ) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"set-up request {method} {path} answered {resp.status}: {answer}")
            return answer

    async def _register(self, name: str) -> dict[str, Any]:
        body = {"username": name, "password": "fuzz-" + name, "auth": {"type": "m.login.dummy"}}
        answer: dict[str, Any] = await self._cs("POST", "/register", None, body)
        return answer

    async def _populate(self) -> None:
        w = self.world
        me = await self._register("fuzzer")
        other = await self._register("other")
        self.token, self.user_id = me["access_token"], me["user_id"]
        w.passwords.append("fuzz-fuzzer")
        w.device_ids += [me["device_id"], other["device_id"], "NOSUCHDEVICE"]
        server = self.hs.server_name
        w.server_names += [server, self.driver.server_name, "127.0.0.1:1"]
        w.aliases += [f"#fuzz:{server}", f"#nosuch:{server}"]
        room = await self._cs(
            "POST",
            "/createRoom",
            self.token,
            {"preset": "public_chat", "room_alias_name": "fuzz", "name": "Fuzz", "topic": "fuzzing"},
        )
        self.room_id = room["room_id"]
        private = await self._cs("POST", "/createRoom", other["access_token"], {"preset": "private_chat"})
        self.private_room = private["room_id"]  # a room the user and the remote server are not in
        w.room_ids += [self.room_id, self.private_room, f"!nosuch:{server}"]
        await self._cs("POST", f"/join/{self.room_id}", other["access_token"], {})
        for i in range(3):
            await self._cs(
                "PUT",
                f"/rooms/{self.room_id}/send/m.room.message/setup{i}",
                self.token,
                {"msgtype": "m.text", "body": f"hello {i}"},
            )
        remote_user = self.driver.user("remote")
        self.remote_user = remote_user
        await self._adopt_room()
        w.user_ids += [self.user_id, other["user_id"], remote_user, f"@nosuch:{server}"]
        messages = await self._cs("GET", f"/rooms/{self.room_id}/messages?dir=b&limit=50", self.token)
        w.event_ids += [e["event_id"] for e in messages["chunk"]] + [f"$nosuch:{server}"]
        w.tokens += [t for t in (messages.get("start"), messages.get("end")) if t]
        sync = await self._cs("GET", "/sync?timeout=0", self.token)
        w.tokens.append(sync["next_batch"])
        filt = await self._cs("POST", f"/user/{self.user_id}/filter", self.token, {"room": {"timeline": {}}})
        w.filter_ids += [filt["filter_id"], "999999"]
        await self._new_victim()

    async def _remote_join(self, user_id: str) -> None:
        client, server = self.driver.fed.client, self.hs.server_name
        template = await client.make_join(server, self.room_id, user_id, list(KNOWN_ROOM_VERSIONS))
        proto, rv = template["event"], get_room_version(template["room_version"])
        pdu = build_event(
            room_version=rv,
            room_id=self.room_id,
            sender=user_id,
            event_type="m.room.member",
            content={"membership": "join"},
            prev_events=proto["prev_events"],
            auth_events=proto["auth_events"],
            depth=proto["depth"],
            origin_server_ts=int(time.time() * 1000),
            server_name=self.driver.server_name,
            signing_key=self.driver.fed.keyring.signing_key,
            state_key=user_id,
        )
        await client.send_join_v2(server, self.room_id, pdu.event_id, pdu.json)

    async def _adopt_room(self) -> None:
        """The remote user joins ``self.room_id`` and is given power there (so that its PDUs get past the
        auth rules); what the harness restores after each example is recorded."""
        await self._remote_join(self.remote_user)
        levels = await self._cs("GET", f"/rooms/{self.room_id}/state/m.room.power_levels/", self.token)
        levels.setdefault("users", {})[self.remote_user] = 100
        await self._cs("PUT", f"/rooms/{self.room_id}/state/m.room.power_levels/", self.token, levels)
        await self._record_baseline()

    async def _room_state(self) -> dict[tuple[str, str], Any]:
        events = await self._cs("GET", f"/rooms/{self.room_id}/state", self.token)
        return {(e["type"], e["state_key"]): e["content"] for e in events}

    async def _record_baseline(self) -> None:
        state = await self._room_state()
        self._baseline = {k: v for k, v in state.items() if k[0] in RESTORED_STATE}
        self._baseline[("m.room.server_acl", "")] = {"allow": ["*"], "deny": [], "allow_ip_literals": True}

    async def _restore_room(self) -> None:
        """Put back what lets the fuzz session reach the room: power levels, join rules, history visibility,
        the server ACL, and the remote server's user in it (the fuzzer may have changed any of them)."""
        state = await self._room_state()
        for key, content in self._baseline.items():
            if key in state and state[key] != content:
                with contextlib.suppress(RuntimeError):
                    await self._cs(
                        "PUT", f"/rooms/{self.room_id}/state/{key[0]}/{key[1]}", self.token, content
                    )
        member = state.get(("m.room.member", self.remote_user), {}).get("membership")
        if member != "join":
            with contextlib.suppress(Exception):
                if member == "ban":
                    body = {"user_id": self.remote_user}
                    await self._cs("POST", f"/rooms/{self.room_id}/unban", self.token, body)
                await self._remote_join(self.remote_user)

    async def _new_victim(self) -> None:
        self._victims += 1
        self.victim_token = (await self._register(f"victim{self._victims}"))["access_token"]

    async def _token_valid(self, token: str) -> bool:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.get(
            self.client_base + "/_matrix/client/v3/account/whoami", headers=headers
        ) as resp:
            return resp.status == 200

    async def _still_joined(self) -> bool:
        answer = await self._cs("GET", "/joined_rooms", self.token)
        return self.room_id in answer["joined_rooms"]

    async def repair(self, req: FuzzRequest, answer: Answer) -> None:
        """Undo what an example did to the session itself: a victim logged out, the user out of the room."""
        if req.auth == "victim" and not await self._token_valid(self.victim_token):
            await self._new_victim()
        if answer.status == 401 and req.auth == "user" and not await self._token_valid(self.token):
            # Nothing the user's token is sent to should end its session; log in again and carry on
            # (the runner reports this as a failure).
            self.lost_token.append(req)
            body = {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "fuzzer"},
                "password": "fuzz-fuzzer",
            }
            self.token = (await self._cs("POST", "/login", None, body))["access_token"]
        if req.op.method == "DELETE" and "/directory/room/" in req.op.path and answer.status == 200:
            # The room's alias was deleted: give it back (for the examples that look it up).
            with contextlib.suppress(RuntimeError):
                alias = quote(self.world.aliases[0], safe="")
                await self._cs("PUT", f"/directory/room/{alias}", self.token, {"room_id": self.room_id})
        changes_rooms = req.op.api == "cs" and req.op.method != "GET" and "room" in req.op.path.lower()
        if changes_rooms and not await self._still_joined():
            try:
                await self._cs("POST", f"/join/{self.room_id}", self.token, {})
            except RuntimeError:
                # Banned, or the room no longer lets us in: carry on in a new room.
                room = await self._cs("POST", "/createRoom", self.token, {"preset": "public_chat"})
                self.room_id = room["room_id"]
                self.world.room_ids.insert(0, self.room_id)
                await self._adopt_room()
        if (changes_rooms and answer.status == 200 and quote(self.room_id, safe="") in req.path) or (
            req.op.api == "ss" and answer.status == 200 and req.op.method == "PUT"
        ):
            await self._restore_room()

    # -- sending one fuzz request ----------------------------------------------------------------------

    def _headers(self, req: FuzzRequest) -> dict[str, str]:
        headers = {"Content-Type": req.content_type} if req.content_type else {}
        if req.op.api == "cs":
            token = {"user": self.token, "victim": self.victim_token, "garbage": "syt_garbage"}.get(req.auth)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            return headers
        if req.auth == "none":
            return headers
        if req.auth == "garbage":
            headers["Authorization"] = 'X-Matrix origin="",key="ed25519:",sig="AAAA",destination'
            return headers
        content: Any = None
        if req.body is not None:
            try:
                content = json.loads(req.body)
            except (ValueError, RecursionError):
                content = None
        origin, key = self.driver.server_name, self.driver.fed.keyring.signing_key
        if req.auth == "wrong_key":
            key = self._wrong_key
        elif req.auth == "other_origin":
            origin = "example.org"
        try:
            auth = lenient_sign_request(req.op.method, req.uri, origin, self.hs.server_name, content, key)
        except CanonicalJsonError:  # not JSON at all (1e400 parses as infinity): the signature cannot hold
            auth = lenient_sign_request(req.op.method, req.uri, origin, self.hs.server_name, None, key)
        headers["Authorization"] = auth
        return headers

    def _body(self, req: FuzzRequest) -> bytes | None:
        if req.op.api == "ss" and req.auth == "signed" and req.body is not None:
            # Signed bodies are sent canonical, as real servers send them (the signature covers the content).
            try:
                return encode_canonical_json(json.loads(req.body), strict=False)
            except Exception:
                return req.body
        return req.body

    async def _flow(self, req: FuzzRequest) -> FuzzRequest:
        """A send_join, send_leave or invite with a real membership event of the remote server: from a
        make_join/make_leave template (send_join by a new remote user each time, send_leave by the
        joined one) or, for an invite of a local user, built on the room's state."""
        spec, client, server = req.pdus[0], self.driver.fed.client, self.hs.server_name
        self._txn_counter += 1
        try:
            if "/send_join/" in req.op.path:
                sender = self.driver.user(f"joiner{self._txn_counter}")
                template = await client.make_join(server, self.room_id, sender, list(KNOWN_ROOM_VERSIONS))
                membership, state_key = "join", sender
            elif "/send_leave/" in req.op.path:
                sender = self.remote_user
                template = await client.make_leave(server, self.room_id, sender)
                membership, state_key = "leave", sender
            else:
                sender, template = self.remote_user, None
                membership, state_key = "invite", self.world.user_ids[self._txn_counter % 2]
        except Exception:  # the template was refused: send the request as generated
            return replace(req, pdus=())
        storage, room_id = self.hs.storage, self.room_id
        rv = await storage.rooms.get_room_version(room_id)
        content = {**(spec.content if isinstance(spec.content, dict) else {}), "membership": membership}
        if template is not None:
            proto = template["event"]
            prev, auth_ids, depth = proto["prev_events"], proto["auth_events"], proto["depth"]
        else:
            state = await current_state_events(self.hs, room_id)
            prev = sorted(await storage.events.get_forward_extremities(room_id))[:10]
            depth = min(await storage.events.get_max_depth_of(prev) + 1, 2**53 - 1)
            auth = auth_events_for(rv, state, "m.room.member", sender, content, state_key)
            auth_ids = sorted(p.event_id for p in auth)
        try:
            pdu = build_event(
                room_version=rv,
                room_id=room_id,
                sender=sender,
                event_type="m.room.member",
                content=content,
                prev_events=prev,
                auth_events=auth_ids,
                depth=depth,
                origin_server_ts=int(time.time() * 1000),
                server_name=self.driver.server_name,
                signing_key=self.driver.fed.keyring.signing_key,
                state_key=state_key,
            )
        except Exception:  # content canonical JSON refuses
            return replace(req, pdus=())
        event = mutate_pdu(dict(pdu.json), spec.mutation, self.user_id, self.private_room)
        try:  # the path names the event as tampered with, when it still has an id
            event_id = Pdu(event, rv).event_id
        except Exception:
            event_id = pdu.event_id
        body: Any = event
        if "/v2/invite/" in req.op.path:  # v1 takes the bare event
            create = (await current_state_events(self.hs, room_id))[("m.room.create", "")]
            body = {"event": event, "room_version": rv.identifier, "invite_room_state": [create.json]}
        prefix = req.op.path.split("{roomId}")[0]
        path = prefix + quote(room_id, safe="") + "/" + quote(event_id, safe="")
        return replace(req, path=path, query=(), body=json.dumps(body).encode(), pdus=())

    async def _transaction(self, req: FuzzRequest) -> bytes:
        """The body of a federation /send carrying ``req.pdus``, built and signed now on the room's real
        forward extremities and auth events, then tampered with as each spec says."""
        try:
            generated = json.loads(req.body or b"null")
        except (ValueError, RecursionError):
            generated = None
        edus = generated.get("edus", []) if isinstance(generated, dict) else []
        pdus = [await self._build_pdu(spec) for spec in req.pdus]
        txn = {"origin": self.driver.server_name, "origin_server_ts": int(time.time() * 1000)}
        return json.dumps({**txn, "pdus": pdus, "edus": edus}).encode()

    async def _build_pdu(self, spec: PduSpec) -> dict[str, Any]:
        storage, room_id = self.hs.storage, self.room_id
        rv = await storage.rooms.get_room_version(room_id)
        state = await current_state_events(self.hs, room_id)
        prev_ids = sorted(await storage.events.get_forward_extremities(room_id))[:10]
        # One more than the prev events, within canonical JSON (as the spec has senders clamp it).
        depth = min(await storage.events.get_max_depth_of(prev_ids) + 1, 2**53 - 1)
        sender = self.remote_user
        content = spec.content if isinstance(spec.content, dict) else {"value": spec.content}
        auth = auth_events_for(rv, state, spec.event_type, sender, content, spec.state_key)

        def build(
            content: dict[str, Any], depth_override: int | None, state_key: str | None
        ) -> dict[str, Any]:
            pdu = build_event(
                room_version=rv,
                room_id=room_id,
                sender=sender,
                event_type=spec.event_type,
                content=content,
                prev_events=prev_ids,
                auth_events=sorted(p.event_id for p in auth),
                depth=depth_override if depth_override is not None else depth,
                origin_server_ts=int(time.time() * 1000),
                server_name=self.driver.server_name,
                signing_key=self.driver.fed.keyring.signing_key,
                state_key=state_key,
            )
            self.driver.events[pdu.event_id] = pdu
            return dict(pdu.json)

        try:
            event = build(content, spec.depth, spec.state_key)
        except Exception:  # what building refuses (floats, huge depth, long state key): sign, then put it in
            safe_key = None if spec.state_key is None else ""
            event = {**build({}, None, safe_key), "content": content}
            if spec.depth is not None:
                event["depth"] = spec.depth
            if spec.state_key is not None:
                event["state_key"] = spec.state_key
        return mutate_pdu(event, spec.mutation, self.user_id, self.private_room)

    async def _send(self, req: FuzzRequest) -> tuple[Answer, FuzzRequest]:
        if req.pdus and req.op.path.endswith("/send/{txnId}"):
            # A fresh transaction id: a repeated one is answered from the first answer, unprocessed.
            self._txn_counter += 1
            path = req.path.rsplit("/", 1)[0] + f"/fuzz{self._txn_counter}"
            req = replace(req, path=path, body=await self._transaction(req), pdus=())
        elif req.pdus:
            req = await self._flow(req)
        base = self.client_base if req.op.api == "cs" else self.federation_base
        url = yarl.URL(base + req.uri, encoded=True)
        try:
            async with self.session.request(
                req.op.method,
                url,
                data=self._body(req),
                headers=self._headers(req),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                allow_redirects=False,
            ) as resp:
                answer = Answer(resp.status, await resp.read())
        except (aiohttp.ClientError, TimeoutError) as e:
            return Answer(0, b"", f"{type(e).__name__}: {e}"), req
        self._learn(answer)
        await self.repair(req, answer)
        return answer, req

    def _learn(self, answer: Answer) -> None:
        """Keep a few real pagination tokens and event ids from successful answers."""
        if answer.status != 200:
            return
        body = answer.json()
        if not isinstance(body, dict):
            return
        for key in ("end", "start", "next_batch", "prev_batch"):
            token = body.get(key)
            if isinstance(token, str) and len(self.world.tokens) < 50 and token not in self.world.tokens:
                self.world.tokens.append(token)
        event_id = body.get("event_id")
        if isinstance(event_id, str) and len(self.world.event_ids) < 200:
            self.world.event_ids.append(event_id)

    def send(self, req: FuzzRequest) -> tuple[Answer, FuzzRequest]:
        """Send one request; the answer, and the request as sent (with any PDUs built and signed)."""
        return self.run(self._send(req), timeout=REQUEST_TIMEOUT * 3)

    async def _room_still_works(self) -> bool:
        """The user can still send to its room and read that back (after whatever the fuzzer sent)."""
        text = f"still here {time.monotonic()}"
        await self._cs(
            "PUT",
            f"/rooms/{self.room_id}/send/m.room.message/check{time.monotonic_ns()}",
            self.token,
            {"msgtype": "m.text", "body": text},
        )
        messages = await self._cs("GET", f"/rooms/{self.room_id}/messages?dir=b&limit=5", self.token)
        return any(e.get("content", {}).get("body") == text for e in messages["chunk"])

    def room_still_works(self) -> bool:
        return self.run(self._room_still_works())

    async def _raw(self, method: str, path: str, body: Any) -> Answer:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.request(method, self.client_base + path, json=body, headers=headers) as resp:
            return Answer(resp.status, await resp.read())

    def client_request(self, method: str, path: str, body: Any = None) -> Answer:
        """One client-server request as the fuzz user; ``{room}``, ``{user}`` and ``{event}`` in ``path`` are
        its room, its user id and a message in the room (for replaying what the fuzzer found)."""
        path = path.format(
            room=quote(self.room_id, safe=""),
            user=quote(self.user_id, safe=""),
            event=quote(self.world.event_ids[0], safe=""),
        )
        return self.run(self._raw(method, path, body))


async def create_database(admin_dsn: str = PG_ADMIN_DSN) -> str:
    """A fresh PostgreSQL database next to ``admin_dsn``'s; its URL."""
    name = f"ranvier_fuzz_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return f"{admin_dsn.rsplit('/', 1)[0]}/{name}"


async def drop_database(admin_dsn: str, url: str) -> None:
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    finally:
        await admin.close()


def lenient_sign_request(
    method: str, uri: str, origin: str, destination: str, content: Any, key: SigningKey
) -> str:
    """An X-Matrix header over any JSON content: numbers outside the canonical range are signed as they
    are, as servers of room versions 1-5 do (``sign_request`` refuses them)."""
    message = encode_canonical_json(request_json(method, uri, origin, destination, content), strict=False)
    return format_x_matrix(XMatrixAuth(origin, destination, key.key_id, key.sign_bytes(message)))


def mutate_pdu(event: dict[str, Any], mutation: str, local_user: str, other_room: str) -> dict[str, Any]:
    """``event`` (signed) tampered with: the cases of tests/fuzz/requests.py's ``PDU_MUTATIONS``."""
    event = dict(event)
    if mutation == "no_signatures":
        event.pop("signatures", None)
    elif mutation == "bad_hash":
        event["content"] = {**event.get("content", {}), "tampered": True}
    elif mutation == "unknown_prev":
        event["prev_events"] = ["$unknown-prev-event"]
    elif mutation == "no_auth_events":
        event["auth_events"] = []
    elif mutation == "forged_local_sender":
        event["sender"] = local_user
    elif mutation == "foreign_sender":
        event["sender"] = "@mallory:example.org"
    elif mutation == "room_not_joined":
        event["room_id"] = other_room
    elif mutation.startswith("drop_"):
        event.pop(mutation.removeprefix("drop_"), None)
    elif mutation == "event_id_field":
        event["event_id"] = "$made-up"
    return event
