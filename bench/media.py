"""Media figures, Ranvier and Synapse in the same run (issue 18): upload and download throughput of a 10 MB
file, thumbnail latency for a 4000x3000 JPEG, and server RSS while 20 uploads of 50 MB run at once.

Both servers run as subprocesses on loopback with SQLite and no rate limits (bench.servers). Uploads go to
``POST /_matrix/media/v3/upload`` with a Content-Length; downloads and thumbnails use the authenticated
``/_matrix/client/v1/media/*`` endpoints. Every upload's bytes differ (a per-upload prefix on each chunk),
so content-addressed storage saves nothing; the 50 MB bodies are generated as they are sent, so the
client holds one 1 MiB chunk, not the files.

Thumbnails: Ranvier makes them on the first request (then keeps them); Synapse makes its configured sizes
when the upload arrives. "first" is the first request after the upload, "again" a repeat; Synapse's
upload time includes its thumbnailing.

``python3 -m bench media [--repeat N] [--concurrent 20] [--big-mb 50] [--only ranvier|synapse]``
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import yaml
from PIL import Image

from bench.servers import BenchServer, RanvierServer, ResourceSampler, SynapseBenchServer
from tests.interop.synapse import DEFAULT_VERSION

MB = 1_000_000
CHUNK = 1 << 20
UPLOAD_LIMIT = 64 * 2**20


class RanvierMediaServer(RanvierServer):
    def configure(self) -> None:
        super().configure()
        path = self.workdir / "homeserver.yaml"
        data = yaml.safe_load(path.read_text())
        data["media"] = {"max_upload_size": UPLOAD_LIMIT}
        # 20 bodies of 50 MB over loopback on 2 shared cores: give them time.
        data["request_limits"] = {"body_timeout": 600}
        path.write_text(yaml.safe_dump(data))


class SynapseMediaServer(SynapseBenchServer):
    def configure(self) -> None:
        super().configure()
        path = self.workdir / "extra.yaml"
        extra = yaml.safe_load(path.read_text())
        extra["max_upload_size"] = "64M"
        extra["rc_media_create"] = {"per_second": 1000, "burst_count": 1000}
        path.write_text(yaml.safe_dump(extra))


@dataclass
class Figures:
    server: str
    upload_10mb_mb_s: float = 0.0
    download_10mb_mb_s: float = 0.0
    thumbnail_first_ms: float = 0.0
    thumbnail_again_ms: float = 0.0
    jpeg_upload_ms: float = 0.0
    concurrent_uploads: int = 0
    concurrent_mb: int = 0
    concurrent_ok: int = 0
    concurrent_wall_s: float = 0.0
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    notes: list[str] = field(default_factory=list)


async def _register(session: aiohttp.ClientSession, server: BenchServer, name: str) -> str:
    async with session.post(
        server.client_url + "/_matrix/client/v3/register",
        json={"username": name, "password": "bench password 1", "auth": {"type": "m.login.dummy"}},
    ) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"{server.kind}: register failed: {body}")
        return str(body["access_token"])


async def _generated(index: int, size: int, base: bytes) -> AsyncIterator[bytes]:
    sent, n = 0, 0
    while sent < size:
        chunk = (index.to_bytes(4, "big") + n.to_bytes(4, "big") + base)[: min(CHUNK, size - sent)]
        yield chunk
        sent += len(chunk)
        n += 1


async def _upload(
    session: aiohttp.ClientSession, server: BenchServer, token: str, body: bytes | AsyncIterator[bytes],
    size: int, content_type: str,
) -> str:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type, "Content-Length": str(size)}
    async with session.post(
        server.client_url + "/_matrix/media/v3/upload", data=body, headers=headers
    ) as resp:
        answer = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"{server.kind}: upload failed {resp.status}: {answer}")
        return str(answer["content_uri"])


async def _download(session: aiohttp.ClientSession, url: str, token: str) -> int:
    size = 0
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"download {url} failed {resp.status}: {await resp.text()}")
        async for chunk in resp.content.iter_chunked(CHUNK):
            size += len(chunk)
    return size


def _media_url(server: BenchServer, kind: str, uri: str) -> str:
    origin, _, media_id = uri[len("mxc://") :].partition("/")
    return f"{server.client_url}/_matrix/client/v1/media/{kind}/{origin}/{media_id}"


def _photo() -> bytes:
    """A 4000x3000 JPEG with detail (a gradient with noise), about a few MB, like a phone photo."""
    im = Image.effect_noise((4000, 3000), 64).convert("RGB")
    gradient = Image.linear_gradient("L").resize((4000, 3000))
    im = Image.merge("RGB", (im.getchannel(0), gradient, im.getchannel(2)))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


async def measure(server: BenchServer, repeat: int, concurrent: int, big_mb: int, photo: bytes) -> Figures:
    fig = Figures(server.kind)
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        token = await _register(session, server, "bench")
        base = os.urandom(CHUNK)

        # 10 MB upload and download throughput (median of `repeat`).
        ups, downs = [], []
        for i in range(repeat):
            data = (i.to_bytes(4, "big") + base * 10)[: 10 * MB]
            t0 = time.perf_counter()
            uri = await _upload(session, server, token, data, len(data), "application/octet-stream")
            ups.append(10 / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            got = await _download(session, _media_url(server, "download", uri), token)
            downs.append(10 / (time.perf_counter() - t0))
            assert got == len(data), (got, len(data))
        fig.upload_10mb_mb_s = statistics.median(ups)
        fig.download_10mb_mb_s = statistics.median(downs)

        # Thumbnail latency for a 4000x3000 JPEG (320x240 scale), first request and again.
        firsts, agains, jpeg_ups = [], [], []
        for i in range(repeat):
            body = photo + i.to_bytes(4, "big")  # distinct bytes (trailing data after the JPEG end marker)
            t0 = time.perf_counter()
            uri = await _upload(session, server, token, body, len(body), "image/jpeg")
            jpeg_ups.append((time.perf_counter() - t0) * 1000)
            url = _media_url(server, "thumbnail", uri) + "?width=320&height=240&method=scale"
            for bucket in (firsts, agains):
                t0 = time.perf_counter()
                await _download(session, url, token)
                bucket.append((time.perf_counter() - t0) * 1000)
        fig.thumbnail_first_ms = statistics.median(firsts)
        fig.thumbnail_again_ms = statistics.median(agains)
        fig.jpeg_upload_ms = statistics.median(jpeg_ups)

        # RSS while `concurrent` uploads of `big_mb` MB run at once.
        size = big_mb * MB
        await asyncio.sleep(1)
        with ResourceSampler({server.kind: server.pid}, interval=0.05) as idle:
            await asyncio.sleep(0.5)
        fig.rss_before_mb = idle.usage[server.kind].peak_rss_mb
        t0 = time.perf_counter()
        with ResourceSampler({server.kind: server.pid}, interval=0.05) as sampler:
            results = await asyncio.gather(
                *(
                    _upload(
                        session, server, token, _generated(i, size, base), size, "application/octet-stream"
                    )
                    for i in range(concurrent)
                ),
                return_exceptions=True,
            )
        fig.concurrent_wall_s = time.perf_counter() - t0
        fig.concurrent_uploads, fig.concurrent_mb = concurrent, big_mb
        fig.concurrent_ok = sum(1 for r in results if isinstance(r, str))
        fig.notes += [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, str)][:3]
        fig.rss_peak_mb = sampler.usage[server.kind].peak_rss_mb
    return fig


def _table(figures: list[Figures]) -> str:
    rows = [
        ("upload 10 MB (MB/s, median)", "upload_10mb_mb_s", "{:.0f}"),
        ("download 10 MB (MB/s, median)", "download_10mb_mb_s", "{:.0f}"),
        ("4000x3000 JPEG upload (ms)", "jpeg_upload_ms", "{:.0f}"),
        ("thumbnail 320x240, first request (ms)", "thumbnail_first_ms", "{:.0f}"),
        ("thumbnail 320x240, again (ms)", "thumbnail_again_ms", "{:.1f}"),
        ("concurrent uploads done", "concurrent_ok", "{}"),
        ("concurrent uploads wall time (s)", "concurrent_wall_s", "{:.1f}"),
        ("RSS before (MB)", "rss_before_mb", "{:.0f}"),
        ("RSS peak during concurrent uploads (MB)", "rss_peak_mb", "{:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  " + "  ".join(f"{f.server:>10}" for f in figures)]
    for label, attr, fmt in rows:
        lines.append(f"{label:{width}}  " + "  ".join(f"{fmt.format(getattr(f, attr)):>10}" for f in figures))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench media", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--only", choices=("ranvier", "synapse"))
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/media"))
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    photo = _photo()
    print(f"test photo: 4000x3000 JPEG, {len(photo) / MB:.1f} MB")
    figures = []
    for kind in ("ranvier", "synapse"):
        if args.only and kind != args.only:
            continue
        where = workdir / f"{kind}-{int(time.time())}"
        server: BenchServer = (
            RanvierMediaServer(where)
            if kind == "ranvier"
            else SynapseMediaServer(where, args.synapse_version)
        )
        server.start()
        try:
            figures.append(asyncio.run(measure(server, args.repeat, args.concurrent, args.big_mb, photo)))
        finally:
            server.stop()
        print(f"{kind}: done")
    print(_table(figures))
    for f in figures:
        for note in f.notes:
            print(f"{f.server}: {note}")
    out = workdir / "media.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([asdict(f) for f in figures], indent=2))
    print(f"written {out}")
