"""A small IRC server for the heisenbridge test: loopback, one process, enough of RFC 1459/2812 for a few
clients in a channel (registration with NICK/USER and CAP negotiation skipped, JOIN with the names
list, PRIVMSG to a channel or a nick, PING, WHO, MODE, PART, QUIT). Every PRIVMSG is recorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

SERVER = "irc.test"


@dataclass
class _Conn:
    writer: asyncio.StreamWriter
    nick: str = ""
    user: str = ""
    registered: bool = False
    channels: set[str] = field(default_factory=set)

    @property
    def prefix(self) -> str:
        return f"{self.nick}!{self.user or self.nick}@127.0.0.1"

    def send(self, line: str) -> None:
        if not self.writer.is_closing():
            self.writer.write((line + "\r\n").encode())


class IrcServer:
    def __init__(self) -> None:
        self.port = 0
        self.conns: list[_Conn] = []
        self.privmsgs: list[tuple[str, str, str]] = []  # (from nick, target, text)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for conn in self.conns:
            conn.writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def members(self, channel: str) -> list[_Conn]:
        return [c for c in self.conns if channel in c.channels]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self.conns.append(conn)
        try:
            while not reader.at_eof():
                raw = await reader.readline()
                if not raw:
                    break
                self._handle(conn, raw.decode("utf-8", "replace").rstrip("\r\n"))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._part_all(conn, "QUIT :Connection closed")
            self.conns.remove(conn)
            writer.close()

    def _part_all(self, conn: _Conn, message: str) -> None:
        for channel in list(conn.channels):
            for other in self.members(channel):
                if other is not conn:
                    other.send(f":{conn.prefix} {message}")
        conn.channels.clear()

    def _handle(self, conn: _Conn, line: str) -> None:
        if not line:
            return
        if line.startswith(":"):
            line = line.split(" ", 1)[1] if " " in line else ""
        head, _, trailing = line.partition(" :")
        parts = head.split()
        if not parts:
            return
        command, params = parts[0].upper(), parts[1:]
        if trailing or " :" in line:
            params.append(trailing)
        nick = conn.nick or "*"
        if command == "CAP":
            if params and params[0].upper() == "LS":
                conn.send(f":{SERVER} CAP * LS :")
            elif params and params[0].upper() == "REQ":
                conn.send(f":{SERVER} CAP * NAK :{params[-1]}")
        elif command == "NICK" and params:
            if any(c.nick.lower() == params[0].lower() for c in self.conns if c is not conn):
                conn.send(f":{SERVER} 433 {nick} {params[0]} :Nickname is already in use")
                return
            conn.nick = params[0]
            self._maybe_welcome(conn)
        elif command == "USER" and params:
            conn.user = params[0]
            self._maybe_welcome(conn)
        elif command == "PING":
            conn.send(f":{SERVER} PONG {SERVER} :{params[-1] if params else ''}")
        elif command == "JOIN" and params:
            for channel in params[0].split(","):
                if channel in conn.channels:
                    continue
                conn.channels.add(channel)
                for member in self.members(channel):
                    member.send(f":{conn.prefix} JOIN {channel}")
                names = " ".join(c.nick for c in self.members(channel))
                conn.send(f":{SERVER} 353 {nick} = {channel} :{names}")
                conn.send(f":{SERVER} 366 {nick} {channel} :End of /NAMES list.")
        elif command == "PART" and params:
            for channel in params[0].split(","):
                for member in self.members(channel):
                    member.send(f":{conn.prefix} PART {channel}")
                conn.channels.discard(channel)
        elif command in ("PRIVMSG", "NOTICE") and len(params) >= 2:
            target, text = params[0], params[-1]
            if command == "PRIVMSG":
                self.privmsgs.append((conn.nick, target, text))
            receivers = (
                [c for c in self.members(target) if c is not conn]
                if target.startswith("#")
                else [c for c in self.conns if c.nick.lower() == target.lower()]
            )
            for receiver in receivers:
                receiver.send(f":{conn.prefix} {command} {target} :{text}")
        elif command == "WHO" and params:
            conn.send(f":{SERVER} 315 {nick} {params[0]} :End of /WHO list.")
        elif command == "MODE" and params:
            if params[0].startswith("#"):
                conn.send(f":{SERVER} 324 {nick} {params[0]} +")
            else:
                conn.send(f":{SERVER} 221 {nick} +")
        elif command == "QUIT":
            self._part_all(conn, f"QUIT :{params[-1] if params else ''}")
            conn.writer.close()

    def _maybe_welcome(self, conn: _Conn) -> None:
        if conn.registered or not conn.nick or not conn.user:
            return
        conn.registered = True
        n = conn.nick
        conn.send(f":{SERVER} 001 {n} :Welcome to the test network {conn.prefix}")
        conn.send(f":{SERVER} 002 {n} :Your host is {SERVER}")
        conn.send(f":{SERVER} 003 {n} :This server was created today")
        conn.send(f":{SERVER} 004 {n} {SERVER} test-1 i nt")
        conn.send(f":{SERVER} 005 {n} CHANTYPES=# NICKLEN=30 PREFIX=(ov)@+ :are supported by this server")
        conn.send(f":{SERVER} 422 {n} :MOTD File is missing")


class IrcClient:
    """A person on IRC: a raw connection that registers, joins and reads lines."""

    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.lines: list[str] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, port: int) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._task = asyncio.create_task(self._read())
        self.send(f"NICK {self.nick}")
        self.send(f"USER {self.nick} 0 * :{self.nick}")

    def send(self, line: str) -> None:
        assert self._writer is not None
        self._writer.write((line + "\r\n").encode())

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            raw = await self._reader.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.lines.append(line)
            if line.startswith("PING"):
                self.send("PONG" + line[4:])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
