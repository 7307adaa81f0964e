"""No secret in any log line at any level: a whole flow at DEBUG (registration three ways, login,
appservice, room, message, sync, a federation join and messages both ways between two in-process servers),
then every captured record, formatted with its traceback and with all its attributes, is searched for every
secret used. Message content may appear at DEBUG only."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from pathlib import Path

import aiohttp
import pytest
import yaml

from ranvier.app import Homeserver
from tests.logs.servers import start
from tests.ports import free_port
from tests.scenarios.servers import Client, eventually

X_MATRIX_SIGNATURE = re.compile(r'X-Matrix|sig="?[A-Za-z0-9+/]{20,}', re.IGNORECASE)


def record_text(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    return formatter.format(record) + "\n" + repr(record.__dict__)


async def test_no_secret_reaches_the_logs_at_debug(
    tmp_path: Path,
    servers: list[Homeserver],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    shared_secret = "shared-" + secrets.token_hex(16)
    as_token, hs_token = "as-" + secrets.token_hex(16), "hs-" + secrets.token_hex(16)
    (tmp_path / "bridge.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "bridge",
                "url": f"http://127.0.0.1:{free_port()}",  # nobody there: pushes fail and are retried
                "as_token": as_token,
                "hs_token": hs_token,
                "sender_localpart": "bridgebot",
                "namespaces": {
                    "users": [{"exclusive": True, "regex": "@bridge_.*"}],
                    "aliases": [],
                    "rooms": [],
                },
            }
        )
    )
    a = await start(
        tmp_path / "a",
        registration={"enabled": True, "shared_secret": shared_secret},
        app_service_config_files=[str(tmp_path / "bridge.yaml")],
    )
    servers.append(a)
    b = await start(tmp_path / "b")
    servers.append(b)
    a_url, b_url = (f"http://127.0.0.1:{hs.ports['client']}" for hs in (a, b))
    used: list[str] = [shared_secret, as_token, hs_token]

    # Registration with a password, then a password login (a second token).
    password_a = "pw-" + secrets.token_hex(12)
    async with session.post(
        f"{a_url}/_matrix/client/v3/register",
        json={"username": "alice", "password": password_a, "auth": {"type": "m.login.dummy"}},
    ) as resp:
        reg = await resp.json()
        assert resp.status == 200, reg
    alice = Client(session, a, reg["user_id"], reg["access_token"])
    async with session.post(
        f"{a_url}/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": password_a,
        },
    ) as resp:
        login = await resp.json()
        assert resp.status == 200, login
    async with session.post(
        f"{a_url}/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "wrong",
        },
    ) as resp:
        assert resp.status == 403
    used += [password_a, reg["access_token"], login["access_token"]]

    # Shared-secret registration (the nonce, the MAC and the password are secrets too).
    async with session.get(f"{a_url}/_synapse/admin/v1/register") as resp:
        nonce = (await resp.json())["nonce"]
    password_c = "pw-" + secrets.token_hex(12)
    mac = hmac.new(
        shared_secret.encode(), "\x00".join([nonce, "carol", password_c, "notadmin"]).encode(), hashlib.sha1
    ).hexdigest()
    async with session.post(
        f"{a_url}/_synapse/admin/v1/register",
        json={"nonce": nonce, "username": "carol", "password": password_c, "mac": mac, "admin": False},
    ) as resp:
        carol = await resp.json()
        assert resp.status == 200, carol
    used += [nonce, mac, password_c, carol["access_token"]]

    # The appservice, with its token in the query string.
    async with session.get(
        f"{a_url}/_matrix/client/v3/account/whoami", params={"access_token": as_token}
    ) as resp:
        assert resp.status == 200

    # A room, a message, a sync (token in the query string), then a federation join from B.
    room = await alice.create_room()
    secret_text = "content-" + secrets.token_hex(8)
    # (Client.send_text puts the text into the transaction id, which is in the path: not here.)
    body = {"msgtype": "m.text", "body": secret_text}
    await alice.ok("PUT", f"/rooms/{room}/send/m.room.message/txn-a", body)
    async with session.get(
        f"{a_url}/_matrix/client/v3/sync", params={"access_token": alice.token, "timeout": "0"}
    ) as resp:
        assert resp.status == 200
    password_b = "pw-" + secrets.token_hex(12)
    async with session.post(
        f"{b_url}/_matrix/client/v3/register",
        json={"username": "bob", "password": password_b, "auth": {"type": "m.login.dummy"}},
    ) as resp:
        reg_b = await resp.json()
        assert resp.status == 200, reg_b
    bob = Client(session, b, reg_b["user_id"], reg_b["access_token"])
    used += [password_b, bob.token]
    await bob.ok("POST", f"/join/{room}", {}, server_name=a.server_name)
    reply_text = "reply-" + secrets.token_hex(8)
    await bob.ok("PUT", f"/rooms/{room}/send/m.room.message/txn-b", {"msgtype": "m.text", "body": reply_text})

    async def alice_has_reply() -> bool:
        return reply_text in await alice.texts(room)

    async def bob_has_message() -> bool:
        return secret_text in await bob.texts(room)

    await eventually(alice_has_reply, timeout=30)
    await eventually(bob_has_message, timeout=30)
    await bob.sync()

    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request)s] %(message)s")
    texts = [(r, record_text(r, formatter)) for r in caplog.records]
    # The capture is real: DEBUG was on for every logger, and request lines of both listeners of both
    # servers and outbound lines were captured.
    assert logging.getLogger("ranvier.rooms").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("aiohttp.client").isEnabledFor(logging.DEBUG)
    names = {r.name for r, _ in texts}
    assert {
        "ranvier.access.client",
        "ranvier.access.federation",
        "ranvier.access.outbound_federation",
    } <= names
    a_federation = [
        r for r, _ in texts if r.name == "ranvier.access.federation" and b.server_name in r.getMessage()
    ]
    assert a_federation, "B's requests to A are logged with B as the origin"
    assert any("access_token=<redacted>" in t for _, t in texts)

    for secret in used:
        leaks = [t for _, t in texts if secret in t]
        assert not leaks, f"a secret reached the logs: {leaks[0][:500]}"
    leaks = [t for _, t in texts if X_MATRIX_SIGNATURE.search(t)]
    assert not leaks, f"an X-Matrix header reached the logs: {leaks[0][:500]}"
    for content in (secret_text, reply_text):
        leaks = [t for r, t in texts if content in t and r.levelno > logging.DEBUG]
        assert not leaks, f"message content above DEBUG: {leaks[0][:500]}"
