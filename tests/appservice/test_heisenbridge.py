"""heisenbridge (from PyPI, in its own venv) against Ranvier: the bridge starts, invites its owner to its
control room and answers commands, keeps its configuration across a restart of the bridge, and bridges
one channel of a small IRC server written for the test: an IRC user's message comes in from a ghost
``@irc_*`` user, and a Matrix reply goes out to IRC."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from ranvier.app import Homeserver
from tests.appservice.harness import Client, start_homeserver, wait_until
from tests.appservice.irc_server import IrcClient, IrcServer
from tests.interop.synapse import INSTALL_TIMEOUT, VENVS, _file_lock
from tests.ports import free_port

HEISENBRIDGE_VERSION = "1.15.4"


def ensure_heisenbridge(version: str = HEISENBRIDGE_VERSION) -> Path:
    """The python of a venv with ``heisenbridge==version`` (installed on first use, like Synapse's)."""
    venv = VENVS / f"heisenbridge-{version}"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists():
        return python
    with _file_lock(VENVS / ".install.lock"):
        if marker.exists():
            return python
        (VENVS / ".gitignore").write_text("*\n")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"heisenbridge=={version}",
            ],
            check=True,
            timeout=INSTALL_TIMEOUT,
        )
        marker.write_text(version + "\n")
    return python


class Bridge:
    """heisenbridge as a subprocess, its output in a log file."""

    def __init__(
        self, python: Path, registration: Path, port: int, owner: str, hs_url: str, log: Path
    ) -> None:
        self.args = [str(python), "-m", "heisenbridge", "-v", "-c", str(registration)]
        self.args += ["-l", "127.0.0.1", "-p", str(port), "-o", owner, hs_url]
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = await asyncio.create_subprocess_exec(*self.args, stdout=out, stderr=subprocess.STDOUT)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Owner:
    """The bridge's owner, a Matrix user: accepts the bot's invites, sends commands, reads replies."""

    def __init__(self, client: Client, bot: str) -> None:
        self.client = client
        self.bot = bot
        self.joined: list[str] = []

    async def accept_invites(self) -> list[str]:
        status, body = await self.client.call("GET", "/_matrix/client/v3/sync", timeout="0")
        assert status == 200, body
        new = [room for room in body.get("rooms", {}).get("invite", {}) if room not in self.joined]
        for room in new:
            status, body = await self.client.call("POST", f"/_matrix/client/v3/join/{room}", {})
            assert status == 200, body
            self.joined.append(room)
        return new

    async def next_room(self) -> str:
        found: list[str] = []

        async def poll() -> None:
            while not found:
                found.extend(await self.accept_invites())
                if not found:
                    await asyncio.sleep(0.1)

        await asyncio.wait_for(poll(), 60)
        return found[0]

    async def messages(self, room_id: str) -> list[tuple[str, str]]:
        status, body = await self.client.call(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/messages", dir="b", limit="100"
        )
        assert status == 200, body
        return [
            (e["sender"], str(e["content"].get("body", "")))
            for e in reversed(body["chunk"])
            if e["type"] == "m.room.message"
        ]

    async def wait_for(self, room_id: str, check: Callable[[str, str], bool], what: str) -> tuple[str, str]:
        found: list[tuple[str, str]] = []

        async def poll() -> None:
            while not found:
                found.extend(m for m in await self.messages(room_id) if check(*m))
                if not found:
                    await asyncio.sleep(0.1)

        try:
            await asyncio.wait_for(poll(), 60)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}: {await self.messages(room_id)}") from None
        return found[0]

    async def command(self, room_id: str, text: str, reply: Callable[[str], bool]) -> str:
        """Send a command and wait for the bot's reply that ``reply`` accepts (after the command)."""
        before = len(await self.messages(room_id))
        await self.client.send_text(room_id, text, f"cmd-{before}-{text}")
        found: list[str] = []

        async def poll() -> None:
            while not found:
                msgs = (await self.messages(room_id))[before:]
                found.extend(b for s, b in msgs if s == self.bot and reply(b))
                if not found:
                    await asyncio.sleep(0.1)

        try:
            await asyncio.wait_for(poll(), 60)
        except TimeoutError:
            raise AssertionError(f"no reply to {text!r}: {(await self.messages(room_id))[before:]}") from None
        return found[0]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Homeserver, Bridge, Owner, IrcServer]]:
    python = ensure_heisenbridge()
    as_port, fed_port = free_port(), free_port()
    registration = {
        "id": "heisenbridge",
        "url": f"http://127.0.0.1:{as_port}",
        "as_token": "heisenbridge_as_token_for_tests",
        "hs_token": "heisenbridge_hs_token_for_tests",
        "rate_limited": False,
        "sender_localpart": "heisenbridge",
        "namespaces": {"users": [{"regex": "@irc_.*", "exclusive": True}], "aliases": [], "rooms": []},
    }
    (tmp_path / "heisenbridge.yaml").write_text(yaml.safe_dump(registration))
    config = {
        "server_name": f"127.0.0.1:{fed_port}",
        "signing_key_path": "signing.key",
        "database": {"url": "sqlite:///homeserver.db"},
        "listeners": {
            "client": {"bind": "127.0.0.1", "port": free_port()},
            "federation": {"bind": "127.0.0.1", "port": fed_port, "tls": False},
        },
        "registration": {"enabled": True},
        "federation": {"verify_tls": False, "allow_loopback": True},
        "app_service_config_files": ["heisenbridge.yaml"],
    }
    (tmp_path / "homeserver.yaml").write_text(yaml.safe_dump(config))
    hs = await start_homeserver(tmp_path / "homeserver.yaml")
    irc = IrcServer()
    await irc.start()
    base = f"http://127.0.0.1:{hs.ports['client']}"
    async with aiohttp.ClientSession() as session:
        alice = await Client(session, base).register("alice")
        bridge = Bridge(
            python, tmp_path / "heisenbridge.yaml", as_port, alice.user_id, base, tmp_path / "bridge.log"
        )
        await bridge.start()
        try:
            yield hs, bridge, Owner(alice, f"@heisenbridge:{hs.server_name}"), irc
        finally:
            await bridge.stop()
            await irc.stop()
            await hs.stop()


async def test_heisenbridge_bridges_an_irc_channel(setup: Any) -> None:
    _, bridge, owner, irc = setup
    # Start-up: the bridge opens its control room for its owner and answers commands there.
    control = await owner.next_room()
    await owner.wait_for(control, lambda s, b: s == owner.bot, "the bridge's greeting")
    assert "NETWORKS" in await owner.command(control, "help", lambda b: "NETWORKS" in b)
    # The bridge may merge notices sent close together into one message: look for the reply's line.
    await owner.command(control, "ADDNETWORK test", lambda b: "Network added." in b.splitlines())
    await owner.command(
        control, f"ADDSERVER test 127.0.0.1 {irc.port}", lambda b: "Server added." in b.splitlines()
    )

    # Its configuration (kept in account data on Ranvier) survives a restart of the bridge.
    await bridge.stop()
    await bridge.start()
    reply = await owner.command(control, "NETWORKS", lambda b: "test" in b.lower())
    assert "test" in reply.lower()
    reply = await owner.command(control, "SERVERS test", lambda b: str(irc.port) in b)

    # A network room, a connection to the IRC server, a channel.
    await owner.command(control, "OPEN test", lambda b: "invited" in b.lower())
    network = await owner.next_room()
    await owner.command(network, "CONNECT", lambda b: "Welcome to the test network" in b)
    bob = IrcClient("bob")
    await bob.connect(irc.port)
    bob.send("JOIN #chan")
    await owner.client.send_text(network, "JOIN #chan", "join-chan")
    channel = await owner.next_room()

    # IRC -> Matrix: bob's message arrives from his ghost user.
    await wait_until(lambda: len(irc.members("#chan")) == 2, "the bridge on #chan")
    bob.send("PRIVMSG #chan :hello from irc")
    sender, _ = await owner.wait_for(channel, lambda s, b: b == "hello from irc", "bob's message on Matrix")
    assert sender.startswith("@irc_") and "bob" in sender
    # Matrix -> IRC: alice's reply reaches bob.
    await owner.client.send_text(channel, "hello from matrix", "reply-1")
    await wait_until(
        lambda: any(line.endswith("PRIVMSG #chan :hello from matrix") for line in bob.lines),
        "alice's reply on IRC",
    )
    await bob.close()
