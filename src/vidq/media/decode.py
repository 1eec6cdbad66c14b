"""Input media from untrusted strings: base64 and ``data:`` URIs to bytes, the format by
magic bytes (never the client's claimed MIME type or name), and a check that the bytes are
a readable image, audio or video within the limits.

Every failure is an ``InvalidInput`` (422) naming the field, or ``PayloadTooLarge`` (413)
when the decoded bytes are over the limit.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import dataclasses
import enum
import io
import math
import re
import struct
import zlib

import av
from PIL import Image

from vidq.errors import InvalidInput, PayloadTooLarge, ServiceUnavailable
from vidq.media.audio import SAMPLE_RATE, decode_audio
from vidq.media.video import VideoMeta, probe_video


class Kind(enum.StrEnum):
    """What an input field holds."""

    IMAGE = "image"  # PNG, JPEG or WEBP
    AUDIO = "audio"  # WAV, MP3, FLAC, OGG, AAC (ADTS), M4A
    VIDEO = "video"  # MP4/MOV, WebM/Matroska


@dataclasses.dataclass(frozen=True, slots=True)
class Format:
    """A media format recognised by its first bytes."""

    name: str  # "png", "mp3", ...
    kind: Kind
    demuxer: str | None  # FFmpeg demuxer for audio/video (never let FFmpeg guess)
    content_type: str


_PNG = Format("png", Kind.IMAGE, None, "image/png")
_JPEG = Format("jpeg", Kind.IMAGE, None, "image/jpeg")
_WEBP = Format("webp", Kind.IMAGE, None, "image/webp")
_WAV = Format("wav", Kind.AUDIO, "wav", "audio/wav")
_MP3 = Format("mp3", Kind.AUDIO, "mp3", "audio/mpeg")
_FLAC = Format("flac", Kind.AUDIO, "flac", "audio/flac")
_OGG = Format("ogg", Kind.AUDIO, "ogg", "audio/ogg")
_AAC = Format("aac", Kind.AUDIO, "aac", "audio/aac")
_MP4 = Format("mp4", Kind.VIDEO, "mp4", "video/mp4")
_MKV = Format("matroska", Kind.VIDEO, "matroska", "video/x-matroska")

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # Pillow's names, the only ones it may open


def sniff(data: bytes) -> Format | None:
    """The format of ``data`` from its magic bytes, or None."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _PNG
    if head.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _WEBP
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _WAV
    if head.startswith((b"ID3", b"\xff\xfb", b"\xff\xfa", b"\xff\xf3", b"\xff\xf2", b"\xff\xe3")):
        return _MP3
    if head.startswith((b"\xff\xf1", b"\xff\xf9")):
        return _AAC
    if head.startswith(b"fLaC"):
        return _FLAC
    if head.startswith(b"OggS"):
        return _OGG
    if head[4:8] == b"ftyp":
        # M4A and MP4 share the container; the streams inside decide (audio or video).
        return _MP4
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _MKV
    return None


_B64 = re.compile(rb"[A-Za-z0-9+/\-_]*={0,2}")
_DATA_URI = re.compile(r"data:([^,]{0,200}),", re.IGNORECASE)


def decode_inline(field: str, value: str, max_bytes: int) -> bytes:
    """Raw base64 (standard or URL-safe, padding optional) or a base64 ``data:`` URI."""
    text = value.strip()
    header = _DATA_URI.match(text)
    if header is not None:
        if not header.group(1).lower().endswith(";base64"):
            raise InvalidInput(field, "a data: URI must be base64-encoded (';base64,')")
        text = text[header.end() :]
    elif text[:5].lower() == "data:":
        raise InvalidInput(field, "malformed data: URI")
    compact = re.sub(r"\s+", "", text).encode("ascii", "replace")
    if math.floor(len(compact) * 3 / 4) > max_bytes + 3:
        raise PayloadTooLarge(f"{field}: decoded input is over the limit of {max_bytes} bytes")
    if not compact or not _B64.fullmatch(compact):
        raise InvalidInput(field, "not valid base64 (nor a data: URI or an https URL)")
    compact = compact.rstrip(b"=")
    compact += b"=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(field, "not valid base64") from exc
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{field}: decoded input is over the limit of {max_bytes} bytes")
    return data


@dataclasses.dataclass(frozen=True, slots=True)
class ImageMeta:
    width: int
    height: int


@dataclasses.dataclass(frozen=True, slots=True)
class AudioMeta:
    seconds: float
    channels: int


def _format_of(field: str, data: bytes, kind: Kind) -> Format:
    fmt = sniff(data)
    if fmt is None or (fmt.kind is not kind and not (fmt is _MP4 and kind is Kind.AUDIO)):
        found = f"{fmt.name} {fmt.kind.value}" if fmt else "unrecognised data"
        raise InvalidInput(field, f"expected {_ACCEPTED[kind]}, got {found}")
    return fmt


_ACCEPTED = {
    Kind.IMAGE: "a PNG, JPEG or WEBP image",
    Kind.AUDIO: "WAV, MP3, FLAC, OGG, AAC or M4A audio",
    Kind.VIDEO: "an MP4, MOV, WebM or MKV video",
}


_ORIENTATION = 0x0112  # EXIF tag
_ROTATED = (5, 6, 7, 8)  # orientations that swap width and height


def image_size(field: str, data: bytes, max_pixels: int) -> tuple[Format, int, int]:
    """The format and stored size of an image, from its header alone; 422 over
    ``max_pixels``. Nothing is decoded and no pixel memory is taken."""
    fmt = _format_of(field, data, Kind.IMAGE)
    try:
        if fmt is _WEBP:
            # Pillow's WEBP opener allocates the whole canvas: read the header ourselves.
            width, height = _webp_size(field, data)
        else:
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                width, height = img.size  # lazy: the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(
            field, f"image has too many pixels (decompression bomb check): {exc}"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(field, f"unreadable {fmt.name} image: {exc}") from exc
    if width * height > max_pixels:
        raise InvalidInput(
            field,
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
        )
    return fmt, width, height


def _webp_size(field: str, data: bytes) -> tuple[int, int]:
    """The canvas size in a WEBP header (simple lossy, lossless or extended)."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise InvalidInput(field, "unreadable webp image: no size in its header")


def check_image(field: str, data: bytes, max_pixels: int) -> tuple[Format, ImageMeta]:
    """A fully decodable PNG/JPEG/WEBP of at most ``max_pixels`` pixels. The size is
    judged from the header (``image_size``) before any pixel is decoded; the decode then
    needs the whole image in memory (see ``DecodePool`` for where it runs)."""
    fmt, _, _ = image_size(field, data, max_pixels)
    try:
        if fmt is _PNG:
            _png_complete(data)
        width, height = _decoded_size(data)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        failure = f"unreadable {fmt.name} image: {exc}"
    else:
        return fmt, ImageMeta(width, height)
    # Raised outside the except block: Pillow's exception holds its decoder's frame, and
    # with it the whole pixel buffer, for as long as it is referenced.
    raise InvalidInput(field, failure)


# PNG color type -> samples per pixel (grey, RGB, palette, grey+alpha, RGBA)
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip


def _png_complete(data: bytes) -> None:
    """Refuse a PNG whose pixel data ends before its last row (ValueError). Pillow's
    decoder stops without an error where the compressed stream ends, and fills the rest
    of the image with black: a header declaring 6320x6320 and one row of data would
    otherwise pass as a full-size frame. Inflates the data without keeping it."""
    offset, expected, inflate, seen = 8, 0, zlib.decompressobj(), 0
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR" and len(body) == 13:
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            bits = depth * _PNG_SAMPLES.get(color, 4)
            passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
            for x0, y0, dx, dy in passes:
                cols, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
                if cols > 0 and rows > 0:
                    expected += rows * (1 + -(-cols * bits // 8))
        elif kind == b"IDAT":
            while body and seen <= expected:
                seen += len(inflate.decompress(body, 1 << 20))
                body = inflate.unconsumed_tail
        elif kind == b"IEND":
            break
    if seen < expected:
        raise ValueError(f"image file is truncated ({seen} of {expected} bytes of pixel data)")


def _decoded_size(data: bytes) -> tuple[int, int]:
    """Decode every pixel (a truncated or corrupt image fails here, not in the worker);
    the size as shown, EXIF orientation applied. The pixels are released on return."""
    img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    try:
        img.load()
        width, height = img.size
        # After load(): a PNG may carry its EXIF after the pixels, and getexif() of a PNG
        # not yet loaded would decode it.
        if img.getexif().get(_ORIENTATION, 1) in _ROTATED:
            return height, width
        return width, height
    finally:
        img.close()  # frees the pixels now (leaving a `with` block does not)


DECODE_WAIT_S = 30.0  # how long a submit waits for a free decode thread before a 503


class DecodePool:
    """The threads that decode input images in the API process: at most ``threads``
    images at once, each checked by its header (on the caller's thread) before it waits
    for one.

    A decode holds the whole image (up to ``max_image_pixels`` x 4 bytes). Run on the
    request threads, concurrent decodes would each take that, and glibc keeps what a
    thread frees in that thread's arena: 40 parallel 6320x6320 PNGs took the API from
    113 MB to 1.1 GB and it stayed there. A few dedicated threads reuse their own memory,
    so the API's memory for images is O(threads), whatever the number of submits."""

    def __init__(self, threads: int, wait_s: float = DECODE_WAIT_S) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="vidq-decode"
        )
        self._wait_s = wait_s

    def check_image(self, field: str, data: bytes, max_pixels: int) -> tuple[Format, ImageMeta]:
        """``check_image`` on a decode thread; 503 if none is free within ``wait_s``."""
        image_size(field, data, max_pixels)  # refuse what is too big before queueing
        future = self._pool.submit(check_image, field, data, max_pixels)
        try:
            return future.result(timeout=self._wait_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ServiceUnavailable(
                f"{field}: every image decoder is busy; retry in a few seconds"
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def check_audio(field: str, data: bytes, max_seconds: float) -> tuple[Format, AudioMeta]:
    """Audio that decodes to at most ``max_seconds``."""
    fmt = _format_of(field, data, Kind.AUDIO)
    try:
        samples = decode_audio(data, fmt.demuxer, max_seconds=max_seconds, rate=SAMPLE_RATE)
    except (ValueError, av.FFmpegError, OSError) as exc:
        raise InvalidInput(field, f"unreadable {fmt.name} audio: {exc}") from exc
    return fmt, AudioMeta(seconds=samples.shape[1] / SAMPLE_RATE, channels=samples.shape[0])


def check_video(
    field: str, data: bytes, max_seconds: float, max_pixels: int
) -> tuple[Format, VideoMeta]:
    """A readable video of at most ``max_seconds`` and ``max_pixels`` per frame."""
    fmt = _format_of(field, data, Kind.VIDEO)
    try:
        meta = probe_video(data, fmt.demuxer, max_frames=int(max_seconds * 240))
    except (ValueError, av.FFmpegError, OSError) as exc:
        raise InvalidInput(field, f"unreadable {fmt.name} video: {exc}") from exc
    if meta.width * meta.height > max_pixels:
        raise InvalidInput(
            field, f"video frames are {meta.width}x{meta.height}, over {max_pixels} pixels"
        )
    if meta.seconds > max_seconds:
        raise InvalidInput(
            field, f"video is {meta.seconds:.1f} s, over the {max_seconds:g} s limit"
        )
    return fmt, meta
