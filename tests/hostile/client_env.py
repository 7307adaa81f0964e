"""The client-side hostile tests' harness: one real Ranvier in-process (real storage, HTTP on loopback) whose
server name carries a port, four users, and a ``probe`` that makes one request, checks the answer and
records its outcome by category (refused / accepted / 5xx; printed at the end of each module).

Users: Alice creates the rooms (power 100, or creator in v12), Carol is given power 50 (a moderator) where a
test says so, Bob is a plain member at 0 and Eve never joins anything.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.config import parse_config

V3 = "/_matrix/client/v3"
SERVER_NAME = "authz.test:8448"  # a port in the name, as real deployments without delegation have
PASSWORD = "correct horse battery staple"

# module -> category -> outcome -> count
OUTCOMES: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))


def seg(value: str) -> str:
    """One percent-encoded path segment (room, event and user ids hold reserved characters)."""
    return quote(value, safe="")


def state_path(room_id: str, event_type: str, key: str = "") -> str:
    """``/rooms/{roomId}/state/{eventType}[/{stateKey}]``, the empty key written without the slash (the
    trailing-slash form has its own test)."""
    path = f"/rooms/{seg(room_id)}/state/{seg(event_type)}"
    return path + f"/{seg(key)}" if key else path


@dataclass
class User:
    name: str
    user_id: str
    token: str
    device_id: str


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def errcode(self) -> str | None:
        return self.body.get("errcode") if isinstance(self.body, dict) else None


@dataclass
class ClientEnv:
    hs: Homeserver
    http: aiohttp.ClientSession
    base: str  # http://127.0.0.1:<port>
    module: str
    users: dict[str, User] = field(default_factory=dict)

    @property
    def alice(self) -> User:
        return self.users["alice"]

    @property
    def bob(self) -> User:
        return self.users["bob"]

    @property
    def carol(self) -> User:
        return self.users["carol"]

    @property
    def eve(self) -> User:
        return self.users["eve"]

    async def call(
        self,
        who: User | str | None,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        """One request; ``who`` is a user, a bare access token, or None for no token. ``path`` is under
        /_matrix/client/v3 unless it starts with /_matrix."""
        token = who.token if isinstance(who, User) else who
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        url = self.base + (path if path.startswith("/_matrix") else V3 + path)
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with self.http.request(method, url, headers=headers, params=params, **kwargs) as resp:
            text = await resp.text()
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = text
        return Reply(resp.status, answer)

    async def probe(
        self,
        category: str,
        who: User | str | None,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: int,
        errcode: str | None = None,
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        """A case of the corpus: the request, the status (and errcode) it must get, never a 5xx."""
        reply = await self.call(who, method, path, body, raw=raw, params=params)
        outcome = "5xx" if reply.status >= 500 else "accepted" if reply.status < 300 else "refused"
        OUTCOMES[self.module][category][outcome] += 1
        assert reply.status == expect, (method, path, body, reply)
        if errcode is not None:
            assert reply.errcode == errcode, (method, path, body, reply)
        if reply.status >= 400:
            assert isinstance(reply.body, dict) and isinstance(reply.body.get("error"), str), reply
        return reply

    async def ok(self, who: User, method: str, path: str, body: Any = None, **params: str) -> Any:
        reply = await self.call(who, method, path, body, params=params or None)
        assert reply.status == 200, (method, path, body, reply)
        return reply.body

    # -- room helpers --------------------------------------------------------------------------------

    async def create_room(self, who: User, **body: Any) -> str:
        return str((await self.ok(who, "POST", "/createRoom", body))["room_id"])

    async def join(self, who: User, room_id: str) -> None:
        await self.ok(who, "POST", f"/join/{seg(room_id)}", {})

    async def send_text(self, who: User, room_id: str, text: str) -> str:
        self._txn += 1
        path = f"/rooms/{seg(room_id)}/send/m.room.message/t{self._txn}"
        return str((await self.ok(who, "PUT", path, {"msgtype": "m.text", "body": text}))["event_id"])

    async def put_state(self, who: User, room_id: str, event_type: str, content: Any, key: str = "") -> str:
        return str((await self.ok(who, "PUT", state_path(room_id, event_type, key), content))["event_id"])

    async def state(self, who: User, room_id: str, event_type: str, key: str = "") -> Any:
        return await self.ok(who, "GET", state_path(room_id, event_type, key))

    async def set_power(self, room_id: str, user: User, level: int) -> None:
        """Alice gives ``user`` a power level (Alice needs none in v12, where creators are not listed)."""
        levels = await self.state(self.alice, room_id, "m.room.power_levels")
        levels.setdefault("users", {})[user.user_id] = level
        await self.put_state(self.alice, room_id, "m.room.power_levels", levels)

    async def get_event(self, who: User, room_id: str, event_id: str) -> Any:
        return await self.ok(who, "GET", f"/rooms/{seg(room_id)}/event/{seg(event_id)}")

    async def assert_room_works(self, room_id: str, *members: User) -> None:
        """Every member can still send, and everyone's message reaches everyone's /messages."""
        sent = [await self.send_text(m, room_id, f"still works ({m.name})") for m in members]
        for m in members:
            chunk = (await self.ok(m, "GET", f"/rooms/{seg(room_id)}/messages", dir="b", limit="50"))["chunk"]
            assert set(sent) <= {e["event_id"] for e in chunk}, m.name

    _txn: int = 0


async def register(http: aiohttp.ClientSession, base: str, name: str) -> User:
    body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    async with http.post(base + V3 + "/register", json=body) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    return User(name, answer["user_id"], answer["access_token"], answer["device_id"])


def config_for(data_dir: Path) -> dict[str, Any]:
    return {
        "server_name": SERVER_NAME,
        "data_dir": str(data_dir),
        "signing_key_path": str(data_dir / "signing.key"),
        "database": {"url": f"sqlite:///{data_dir / 'homeserver.db'}"},
        "listeners": {"client": {"bind": "127.0.0.1", "port": 0}},
        "registration": {"enabled": True},
        "federation": {"enabled": False},
        # The corpus sends bursts: rate limiting is tested elsewhere.
        "rate_limits": {"enabled": False},
    }


@asynccontextmanager
async def start_env(data_dir: Path, module: str) -> AsyncIterator[ClientEnv]:
    data_dir.mkdir(parents=True, exist_ok=True)
    hs = Homeserver(parse_config(config_for(data_dir)))
    await hs.start()
    http = aiohttp.ClientSession()
    base = f"http://127.0.0.1:{hs.ports['client']}"
    try:
        env = ClientEnv(hs, http, base, module)
        for name in ("alice", "bob", "carol", "eve"):
            env.users[name] = await register(http, base, name)
        yield env
    finally:
        await http.close()
        await hs.stop()


def outcome_lines(module: str) -> Iterator[str]:
    table = OUTCOMES.get(module, {})
    total = {"refused": 0, "accepted": 0, "5xx": 0}
    for category in sorted(table):
        counts = table[category]
        for k in total:
            total[k] += counts.get(k, 0)
        yield (
            f"  {category:<40} refused {counts.get('refused', 0):>4}  accepted {counts.get('accepted', 0):>4}"
            f"  5xx {counts.get('5xx', 0):>3}"
        )
    yield (
        f"  {'total':<40} refused {total['refused']:>4}  accepted {total['accepted']:>4}"
        f"  5xx {total['5xx']:>3}"
    )


def report_outcomes(request: pytest.FixtureRequest, module: str) -> None:
    """Print the module's outcome table through the terminal reporter (seen without ``-s``)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not OUTCOMES.get(module):
        return
    reporter.write_line("")
    reporter.write_line(f"client hostile cases in {module}: outcomes per category")
    for line in outcome_lines(module):
        reporter.write_line(line)
