"""Thumbnails with Pillow (CS "Thumbnails"): ``crop`` and ``scale`` at the spec's recommended sizes.

Decoding and resizing are CPU work: ``Thumbnailer.make`` runs them in a worker thread (asyncio.to_thread)
so the event loop keeps serving. Before anything is decoded, the image's header is read and an image whose
decoded size would exceed ``max_pixels`` is refused (a small PNG can declare 50,000 x 50,000 pixels: a
decompression bomb). Only PNG, JPEG, GIF (the first frame) and WebP are opened, whatever the upload's
claimed type: Pillow is told those four formats, so SVG and every other decoder are never used.
"""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import dataclass
from pathlib import Path

# Pillow is imported by the functions that decode (``probe``, ``render``), in the worker thread: a server
# that never thumbnails does not pay its ~2 MB of RSS.
# CS "Thumbnails": the sizes servers SHOULD produce.
RECOMMENDED_SIZES: tuple[tuple[int, int, str], ...] = (
    (32, 32, "crop"),
    (96, 96, "crop"),
    (320, 240, "scale"),
    (640, 480, "scale"),
    (800, 600, "scale"),
)
FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
MIME_OF_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
JPEG_QUALITY = 80


class CannotThumbnail(Exception):
    """Not an image we thumbnail (not one of the four formats, or undecodable)."""


class ImageTooLarge(Exception):
    """The image's declared pixel count is over the limit: it is not decoded."""

    def __init__(self, width: int, height: int, limit: int, detail: str | None = None) -> None:
        super().__init__(detail or f"{width}x{height} is {width * height} pixels, over the limit of {limit}")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return MIME_OF_FORMAT[self.format]


@dataclass(frozen=True, slots=True)
class MadeThumbnail:
    data: bytes
    content_type: str
    width: int
    height: int


def choose_size(
    width: int, height: int, method: str, sizes: tuple[tuple[int, int, str], ...] = RECOMMENDED_SIZES
) -> tuple[int, int, str]:
    """The configured size to serve for a request (only those are made, so a client cannot make us render
    and keep arbitrary sizes): the smallest of the same method at least as big as asked; else the smallest
    of the other method at least as big (the spec forbids answering smaller than asked where possible);
    else the biggest of the same method."""
    by_area = sorted(sizes, key=lambda s: s[0] * s[1])
    covering = [s for s in by_area if s[0] >= width and s[1] >= height]
    for size in covering:
        if size[2] == method:
            return size
    if covering:
        return covering[0]
    same = [s for s in by_area if s[2] == method] or by_area
    return same[-1]


def probe(path: Path, max_pixels: int) -> ImageInfo:
    """The format and size from the header alone. Raises CannotThumbnail or ImageTooLarge."""
    from PIL import Image  # see the imports

    try:
        with Image.open(path, formats=FORMATS) as im:
            info = ImageInfo(str(im.format), im.width, im.height)
    except Image.DecompressionBombError as e:
        # Pillow's own check (at twice its global limit), also on the header alone.
        raise ImageTooLarge(0, 0, max_pixels, detail=str(e)) from e
    except (OSError, ValueError) as e:
        raise CannotThumbnail(str(e)) from e
    if info.format not in MIME_OF_FORMAT:
        raise CannotThumbnail(f"format {info.format}")
    if info.width <= 0 or info.height <= 0:
        raise CannotThumbnail("empty image")
    if info.width * info.height > max_pixels:
        raise ImageTooLarge(info.width, info.height, max_pixels)
    return info


def _target(src_w: int, src_h: int, width: int, height: int, method: str) -> tuple[int, int]:
    """The size the source is resized to (before a crop), never larger than the source."""
    if method == "crop":
        scale = max(width / src_w, height / src_h)
    else:
        scale = min(width / src_w, height / src_h)
    scale = min(scale, 1.0)  # never upscale
    return max(1, math.ceil(src_w * scale)), max(1, math.ceil(src_h * scale))


def render(path: Path, width: int, height: int, method: str, max_pixels: int) -> MadeThumbnail | None:
    """The thumbnail of the image at ``path`` for the box ``width`` x ``height``; None when the image
    already fits in the box (the spec says to serve the original then). Synchronous and CPU-bound: call it
    through ``Thumbnailer.make`` (a worker thread)."""
    from PIL import Image  # see the imports

    info = probe(path, max_pixels)
    if info.width <= width and info.height <= height:
        return None
    try:
        with Image.open(path, formats=FORMATS) as im:
            if im.width * im.height > max_pixels:  # re-checked on the file actually opened
                raise ImageTooLarge(im.width, im.height, max_pixels)
            new_w, new_h = _target(im.width, im.height, width, height, method)
            if im.format == "JPEG":
                # Let the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding (to at least the target):
                # a 4000x3000 photo decodes at a fraction of the cost.
                im.draft("RGB", (new_w, new_h))
            im.seek(0)  # GIF/WebP: the first frame
            frame = im.convert("RGB" if info.format == "JPEG" else "RGBA")
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(0, 0, max_pixels, detail=str(e)) from e
    except (OSError, ValueError, EOFError) as e:
        raise CannotThumbnail(str(e)) from e
    if (frame.width, frame.height) != (new_w, new_h):
        frame = frame.resize((new_w, new_h), Image.Resampling.LANCZOS)
    if method == "crop":
        crop_w, crop_h = min(width, frame.width), min(height, frame.height)
        if frame.width < width or frame.height < height:
            # Too small to fill the box without upscaling: keep the box's aspect ratio at the largest size
            # the image allows.
            ratio = width / height
            crop_w = min(frame.width, round(frame.height * ratio))
            crop_h = min(frame.height, round(crop_w / ratio))
            crop_w, crop_h = max(1, crop_w), max(1, crop_h)
        left, top = (frame.width - crop_w) // 2, (frame.height - crop_h) // 2
        frame = frame.crop((left, top, left + crop_w, top + crop_h))
    out = io.BytesIO()
    if info.format == "JPEG":
        frame.save(out, "JPEG", quality=JPEG_QUALITY)
        content_type = "image/jpeg"
    else:
        frame.save(out, "PNG", optimize=False)
        content_type = "image/png"
    return MadeThumbnail(out.getvalue(), content_type, frame.width, frame.height)


class Thumbnailer:
    def __init__(
        self,
        max_pixels: int,
        sizes: tuple[tuple[int, int, str], ...] = RECOMMENDED_SIZES,
        max_concurrent: int = 2,
    ) -> None:
        self.max_pixels = max_pixels
        self.sizes = sizes
        # A decoded image takes up to 4 bytes a pixel: at most this many are decoded at once, so memory
        # stays within max_concurrent * max_pixels * 4 whatever the number of requests.
        self._slots = asyncio.Semaphore(max_concurrent)

    async def probe(self, path: Path) -> ImageInfo:
        return await asyncio.to_thread(probe, path, self.max_pixels)

    async def make(self, path: Path, width: int, height: int, method: str) -> MadeThumbnail | None:
        # Pillow in a worker thread (asyncio.to_thread): decoding a big photo takes a hundred milliseconds or
        # more of CPU, which must not stall the event loop.
        async with self._slots:
            return await asyncio.to_thread(render, path, width, height, method, self.max_pixels)
