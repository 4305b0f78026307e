"""How the service counts input tokens, as far as it can be known without asking it.

One set of rules for `plan`'s estimates and budgets and for the emulator's `usageMetadata`,
so that a dry run on the emulator bills what the plan said. The rules (docs/protocol.md,
"Tokens per modality"; ai.google.dev, "Understand and count tokens"):

- text: about four characters a token (English; other scripts count more);
- an image with both sides at most 384 px: 258 tokens; a larger one 258 per tile, the crop
  unit being min(width, height) / 1.5, tiles = ceil(w / unit) * ceil(h / unit);
- a PDF: 258 per page;
- audio: 32 per second; video: about 300 per second (a frame, its audio and timestamps);
- anything that cannot be measured: as one image.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import fsspec

CHARS_PER_TOKEN = 4
PART_TOKENS = 258  # an image up to 384 px, a PDF page, or a part that cannot be measured
AUDIO_PER_SECOND = 32
VIDEO_PER_SECOND = 300
_HEAD = 1 << 16


def text_tokens(characters: int) -> int:
    return math.ceil(characters / CHARS_PER_TOKEN)


def is_text(mime: str) -> bool:
    """Whether the service reads a file of this type as text (counted by its characters)."""
    return mime.startswith("text/") or mime in ("application/json", "application/xml")


def file_tokens(path: str, mime: str, fs: fsspec.AbstractFileSystem | None = None) -> int:
    """Tokens of a local, gs:// or s3:// file sent as a part, by the service's rules: text by
    its size, media by what its header says. The whole file is read only for PDF pages and
    MP4 durations. `fs`: the filesystem to read it through, when not the default for its URL."""
    fs, target = (fs, path) if fs is not None else fsspec.core.url_to_fs(path)
    if is_text(mime):
        return text_tokens(fs.size(target))
    with fs.open(target, "rb") as f:
        head = f.read(_HEAD)
    return media_tokens(mime, head, lambda: fs.cat_file(target))


def media_tokens(mime: str, head: bytes, read_all: Callable[[], bytes]) -> int:
    """Tokens of a file or inline blob: `head` is its first 64 KiB, `read_all` its whole content."""
    if mime.startswith("image/"):
        size = image_size(head)
        if size is None:
            return PART_TOKENS
        width, height = size
        if width <= 384 and height <= 384:
            return PART_TOKENS
        unit = max(1, int(min(width, height) / 1.5))
        return PART_TOKENS * math.ceil(width / unit) * math.ceil(height / unit)
    if mime == "application/pdf":
        pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", read_all()))
        return PART_TOKENS * max(pages, 1)
    seconds = media_seconds(head, read_all)
    if seconds is not None and mime.startswith("audio/"):
        return math.ceil(seconds * AUDIO_PER_SECOND)
    if seconds is not None and mime.startswith("video/"):
        return math.ceil(seconds * VIDEO_PER_SECOND)
    return PART_TOKENS


def image_size(head: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG from its first bytes."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                i += 1
                continue
            marker, length = head[i + 1], int.from_bytes(head[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):  # start of frame: height, then width
                return int.from_bytes(head[i + 7 : i + 9], "big"), int.from_bytes(head[i + 5 : i + 7], "big")
            i += 2 + length
    return None


def media_seconds(head: bytes, read_all: Callable[[], bytes]) -> float | None:
    """Duration of a WAV (from its header) or an MP4 / MOV (from its movie header)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        rate = int.from_bytes(head[28:32], "little")  # bytes per second
        data = head.find(b"data")
        if rate and data >= 0:
            return int.from_bytes(head[data + 4 : data + 8], "little") / rate
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        content = read_all()
        at = content.find(b"mvhd")
        if at >= 0:
            version = content[at + 4]
            if version == 1:
                scale = int.from_bytes(content[at + 24 : at + 28], "big")
                length = int.from_bytes(content[at + 28 : at + 36], "big")
            else:
                scale = int.from_bytes(content[at + 16 : at + 20], "big")
                length = int.from_bytes(content[at + 20 : at + 24], "big")
            return length / scale if scale else None
    return None
