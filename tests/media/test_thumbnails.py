"""Thumbnails through the client API: the spec's sizes and methods, the four formats, the original when
it is already small, SVG never, and a decompression bomb refused without being decoded or stored."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from ranvier.media.thumbnailer import ImageTooLarge, choose_size, probe

from .conftest import MediaClient, image_bytes


def _ids(uri: str) -> tuple[str, str]:
    server, _, media_id = uri[len("mxc://") :].partition("/")
    return server, media_id


async def _thumb(
    client: MediaClient, uri: str, w: int, h: int, method: str
) -> tuple[int, bytes, dict[str, str]]:
    server, media_id = _ids(uri)
    async with client.session.get(
        client.url(f"/_matrix/client/v1/media/thumbnail/{server}/{media_id}"),
        params={"width": str(w), "height": str(h), "method": method},
        headers=client.auth,
    ) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


def _decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize(
    ("fmt", "mime", "out"),
    [
        ("PNG", "image/png", "PNG"),
        ("JPEG", "image/jpeg", "JPEG"),
        ("GIF", "image/gif", "PNG"),
        ("WEBP", "image/webp", "PNG"),
    ],
)
async def test_spec_sizes_for_each_format(alice: MediaClient, fmt: str, mime: str, out: str) -> None:
    uri = await alice.upload(image_bytes(fmt, (1000, 750)), mime)
    expected = {
        (32, 32, "crop"): (32, 32),
        (96, 96, "crop"): (96, 96),
        (320, 240, "scale"): (320, 240),
        (640, 480, "scale"): (640, 480),
        (800, 600, "scale"): (800, 600),
    }
    for (w, h, method), size in expected.items():
        status, data, headers = await _thumb(alice, uri, w, h, method)
        assert status == 200, data
        im = _decoded(data)
        assert im.size == size, (fmt, w, h, method)
        assert im.format == out
        assert headers["Content-Type"] == f"image/{out.lower()}"
        assert headers["Content-Disposition"].startswith('inline; filename="thumbnail.')


async def test_requests_between_sizes_get_the_next_size_up(alice: MediaClient) -> None:
    uri = await alice.upload(image_bytes("PNG", (1200, 600)), "image/png")
    # 50x50 crop: the 96x96 crop (never smaller than asked).
    status, data, _ = await _thumb(alice, uri, 50, 50, "crop")
    assert status == 200 and _decoded(data).size == (96, 96)
    # 300x100 scale: the 320x240 box, aspect kept (2:1 -> 320x160).
    status, data, _ = await _thumb(alice, uri, 300, 100, "scale")
    assert status == 200 and _decoded(data).size == (320, 160)
    # Bigger than every size: the biggest (800x600 box -> 800x400).
    status, data, _ = await _thumb(alice, uri, 2000, 2000, "scale")
    assert status == 200 and _decoded(data).size == (800, 400)


async def test_small_image_is_served_as_is_never_upscaled(alice: MediaClient) -> None:
    original = image_bytes("PNG", (20, 10))
    uri = await alice.upload(original, "image/png")
    status, data, headers = await _thumb(alice, uri, 96, 96, "crop")
    assert status == 200
    assert data == original
    assert headers["Content-Type"] == "image/png"
    # A tall narrow image cropped to a square box larger than its width: cropped, not upscaled.
    uri = await alice.upload(image_bytes("PNG", (20, 300)), "image/png")
    status, data, _ = await _thumb(alice, uri, 32, 32, "crop")
    assert status == 200 and _decoded(data).size == (20, 20)


async def test_gif_first_frame(alice: MediaClient) -> None:
    frames = [Image.new("RGB", (400, 400), color) for color in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100)
    uri = await alice.upload(out.getvalue(), "image/gif")
    status, data, _ = await _thumb(alice, uri, 96, 96, "crop")
    assert status == 200
    r, _g, b, _a = _decoded(data).convert("RGBA").getpixel((48, 48))  # type: ignore[misc]
    assert r > 200 and b < 50  # red: the first frame


async def test_svg_and_non_images_are_not_thumbnailed(alice: MediaClient) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="500" height="500"><script>alert(1)</script></svg>'
    for data, mime in ((svg, "image/svg+xml"), (svg, "image/png"), (b"plain text" * 100, "text/plain")):
        uri = await alice.upload(data, mime)
        status, body, _ = await _thumb(alice, uri, 32, 32, "crop")
        assert status == 400, (mime, body)
        assert b"M_UNKNOWN" in body


def _png_bomb(width: int, height: int) -> bytes:
    """A small valid PNG declaring width x height 1-bit pixels (all zero: it compresses to almost nothing)."""
    raw = zlib.compress(b"\x00" * ((width // 8 + 1) * 64))  # only the start of the pixel data
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


async def test_decompression_bomb_refused_and_nothing_stored(alice: MediaClient) -> None:
    bomb = _png_bomb(50_000, 50_000)  # 2.5 gigapixels, a few hundred bytes
    assert len(bomb) < 10_000
    uri = await alice.upload(bomb, "image/png")
    status, body, _ = await _thumb(alice, uri, 96, 96, "crop")
    assert status == 413
    assert b"M_TOO_LARGE" in body and b"pixels" in body
    assert await alice.hs.storage.db.fetchval("SELECT COUNT(*) FROM media_thumbnails") == 0
    # Below Pillow's own limit but above the configured one (20 megapixels here): refused the same way.
    uri = await alice.upload(_png_bomb(6000, 6000), "image/png")
    status, body, _ = await _thumb(alice, uri, 32, 32, "crop")
    assert status == 413
    assert b"36000000 pixels, over the limit of 20000000" in body
    assert await alice.hs.storage.db.fetchval("SELECT COUNT(*) FROM media_thumbnails") == 0
    # Only the uploads themselves are on disk.
    files = [p for p in (Path(alice.hs.config.data_dir) / "media" / "content").rglob("*") if p.is_file()]
    assert len(files) == 2


def test_probe_reads_only_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bomb(100_000, 100_000))
    with pytest.raises(ImageTooLarge):
        probe(path, 32_000_000)


def test_choose_size() -> None:
    assert choose_size(1, 1, "crop") == (32, 32, "crop")
    assert choose_size(33, 10, "crop") == (96, 96, "crop")
    assert choose_size(500, 500, "crop") == (800, 600, "scale")  # no crop size is that big
    assert choose_size(2000, 2000, "crop") == (96, 96, "crop")  # nothing is: the biggest crop
    assert choose_size(320, 240, "scale") == (320, 240, "scale")
    assert choose_size(321, 240, "scale") == (640, 480, "scale")


async def test_thumbnails_are_kept_and_reused(alice: MediaClient) -> None:
    uri = await alice.upload(image_bytes("JPEG", (1600, 1200)), "image/jpeg")
    first = await _thumb(alice, uri, 320, 240, "scale")
    second = await _thumb(alice, uri, 300, 200, "scale")
    assert first[0] == second[0] == 200
    assert first[1] == second[1]
    assert await alice.hs.storage.db.fetchval("SELECT COUNT(*) FROM media_thumbnails") == 1


async def test_concurrent_requests_make_one_thumbnail(alice: MediaClient) -> None:
    uri = await alice.upload(image_bytes("PNG", (900, 900)), "image/png")
    answers = await asyncio.gather(*(_thumb(alice, uri, 96, 96, "crop") for _ in range(8)))
    assert {status for status, _, _ in answers} == {200}
    assert len({data for _, data, _ in answers}) == 1
    assert await alice.hs.storage.db.fetchval("SELECT COUNT(*) FROM media_thumbnails") == 1
    assert alice.hs.media._thumbnail_locks == {}
