"""Decoding input strings and checking media (vidq.media.decode) with real files."""

from __future__ import annotations

import base64
import io
import struct
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.support.media import (
    encode_image,
    moving_mp4,
    mp3_bytes,
    picture,
    png_bad_filter,
    png_header_bomb,
    tone,
    wav_bytes,
)
from vidq.errors import InvalidInput, PayloadTooLarge, ServiceUnavailable
from vidq.media.decode import (
    DecodePool,
    ImageMeta,
    check_audio,
    check_image,
    check_video,
    decode_inline,
    image_size,
    sniff,
)

PNG = encode_image(picture(40, 30), "PNG")


@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(PNG).decode(),
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "DATA:application/octet-stream;charset=x;BASE64," + base64.b64encode(PNG).decode(),
        base64.urlsafe_b64encode(PNG).decode().rstrip("="),
        "\n".join(base64.encodebytes(PNG).decode().split("\n")),
    ],
)
def test_inline_forms(value: str) -> None:
    assert decode_inline("data_uri", value, 10**6) == PNG


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("not base64!", "base64"),
        ("abc$", "base64"),
        ("data:image/png,plain", "base64-encoded"),
        ("data:nocomma", "malformed"),
        ("A", "base64"),
        ("", "base64"),
    ],
)
def test_inline_errors_name_the_field(value: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words) as err:
        decode_inline("second_image_uri", value, 10**6)
    assert err.value.field == "second_image_uri" and err.value.http_status == 422


def test_inline_size_limit_is_413_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge, match="data_uri"):
        decode_inline("data_uri", "A" * 4000, 1000)


def test_sniff_reads_magic_bytes(tmp_path: Path) -> None:
    webp = io.BytesIO()
    picture(8, 8).save(webp, format="WEBP")
    got = {
        "png": PNG,
        "jpeg": encode_image(picture(8, 8), "JPEG"),
        "webp": webp.getvalue(),
        "wav": wav_bytes(tone(0.1)),
        "mp3": mp3_bytes(tone(0.1)),
        "mp4": moving_mp4(tmp_path, 32, 32, 2, 2),
    }
    for name, data in got.items():
        fmt = sniff(data)
        assert fmt is not None and fmt.name == name
    assert sniff(b"GIF89a....") is None and sniff(b"hello") is None


def test_images_are_checked_by_content() -> None:
    fmt, meta = check_image("data_uri", PNG, 10**6)
    assert fmt.name == "png" and (meta.width, meta.height) == (40, 30)
    webp = io.BytesIO()
    picture(30, 50).save(webp, format="WEBP")
    fmt, meta = check_image("data_uri", webp.getvalue(), 10**6)
    assert fmt.name == "webp" and (meta.width, meta.height) == (30, 50)
    gif = io.BytesIO()
    picture(8, 8).save(gif, format="GIF")
    with pytest.raises(InvalidInput, match="expected a PNG, JPEG or WEBP image"):
        check_image("data_uri", gif.getvalue(), 10**6)
    with pytest.raises(InvalidInput, match="unreadable png"):
        check_image("data_uri", PNG[:-30], 10**6)
    with pytest.raises(InvalidInput, match="over the limit of 100"):
        check_image("data_uri", PNG, 100)


def test_a_header_claiming_50000_squared_pixels_is_refused() -> None:
    with pytest.raises(InvalidInput, match="pixels") as err:
        check_image("data_uri", png_header_bomb(50000, 50000), 40_000_000)
    assert err.value.field == "data_uri"
    # Pillow's own decompression-bomb check, for a limit above its own.
    with pytest.raises(InvalidInput, match="decompression bomb"):
        check_image("data_uri", png_header_bomb(50000, 50000), 10**10)


@pytest.mark.parametrize(
    ("mode", "options"),
    [("RGB", {}), ("RGB", {"lossless": True}), ("RGBA", {}), ("RGB", {"exif": b"Exif\0\0"})],
)
def test_webp_size_is_read_from_its_header(mode: str, options: dict[str, object]) -> None:
    # Pillow's WEBP opener allocates the canvas, so vidq reads the size itself first.
    out = io.BytesIO()
    picture(37, 23).convert(mode).save(out, format="WEBP", **options)
    fmt, width, height = image_size("data_uri", out.getvalue(), 10**6)
    assert fmt.name == "webp" and (width, height) == (37, 23)
    with pytest.raises(InvalidInput, match="37x23 = 851 pixels, over the limit of 850"):
        image_size("data_uri", out.getvalue(), 850)


def test_a_webp_header_bomb_is_refused_before_pillow_opens_it() -> None:
    header = b"VP8X" + (10).to_bytes(4, "little") + bytes(4)
    header += (12000 - 1).to_bytes(3, "little") + (12000 - 1).to_bytes(3, "little")
    data = b"RIFF" + (4 + len(header)).to_bytes(4, "little") + b"WEBP" + header
    with pytest.raises(InvalidInput, match="12000x12000 = 144000000 pixels"):
        check_image("data_uri", data, 40_000_000)
    with pytest.raises(InvalidInput, match="no size in its header"):
        check_image("data_uri", data[:24], 40_000_000)


def test_a_failed_decode_keeps_no_pixels_alive() -> None:
    # Pillow's exception holds its decoder, which holds the whole (here 6320x6320) image:
    # chained to our error, 40 parallel failures kept 1.7 GB alive in the API.
    before = Image.core.get_stats()
    with pytest.raises(InvalidInput, match="unreadable png") as err:
        check_image("data_uri", png_bad_filter(6320, 6320), 40_000_000)
    after = Image.core.get_stats()
    assert after["allocated_blocks"] > before["allocated_blocks"]  # it did decode
    assert after["allocated_blocks"] - before["allocated_blocks"] == (
        after["freed_blocks"] - before["freed_blocks"]
    )
    assert err.value.__cause__ is None and err.value.__context__ is None


def test_the_decode_pool_checks_as_check_image_does() -> None:
    pool = DecodePool(1)
    try:
        fmt, meta = pool.check_image("data_uri", PNG, 10**6)
        assert fmt.name == "png" and (meta.width, meta.height) == (40, 30)
        with pytest.raises(InvalidInput, match="unreadable png"):
            pool.check_image("data_uri", PNG[:-30], 10**6)
        with pytest.raises(InvalidInput, match="over the limit of 100"):
            pool.check_image("data_uri", PNG, 100)
    finally:
        pool.close()


def test_a_busy_decode_pool_answers_503() -> None:
    pool = DecodePool(1, wait_s=0.2)
    release = threading.Event()
    try:
        pool._pool.submit(release.wait, 10)  # the only decode thread is taken
        with pytest.raises(ServiceUnavailable, match="busy"):
            pool.check_image("data_uri", PNG, 10**6)
        # Too big is refused at once, without waiting for a decoder.
        with pytest.raises(InvalidInput, match="over the limit"):
            pool.check_image("data_uri", png_header_bomb(6320, 6320), 10**6)
    finally:
        release.set()
        pool.close()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_rotation_swaps_the_sides(fmt: str) -> None:
    img = picture(60, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    out = io.BytesIO()
    img.save(out, format=fmt, exif=exif)
    _, meta = check_image("data_uri", out.getvalue(), 10**6)
    assert (meta.width, meta.height) == (20, 60)


def test_audio_is_decoded_and_measured() -> None:
    fmt, meta = check_audio("audio_uri", wav_bytes(tone(1.5)), 60)
    assert fmt.name == "wav" and abs(meta.seconds - 1.5) < 0.01 and meta.channels == 1
    fmt, meta = check_audio("audio_uri", mp3_bytes(tone(1.0)), 60)
    assert fmt.name == "mp3" and abs(meta.seconds - 1.0) < 0.1
    with pytest.raises(InvalidInput, match="longer than 1"):
        check_audio("audio_uri", wav_bytes(tone(1.5)), 1)
    with pytest.raises(InvalidInput, match="unreadable"):
        check_audio("audio_uri", b"RIFF\x10\x00\x00\x00WAVEthis is text, not audio", 60)
    with pytest.raises(InvalidInput, match="expected WAV"):
        check_audio("audio_uri", b"just some text", 60)


def test_video_is_probed(tmp_path: Path) -> None:
    data = moving_mp4(tmp_path, 64, 48, 12, 6)
    fmt, meta = check_video("data_uri", data, 30, 10**6)
    assert fmt.name == "mp4" and (meta.width, meta.height, meta.frames) == (64, 48, 12)
    assert meta.seconds == 2.0
    with pytest.raises(InvalidInput, match="over the 1 s limit"):
        check_video("data_uri", data, 1, 10**6)
    with pytest.raises(InvalidInput, match="unreadable"):
        check_video("data_uri", data[:200], 30, 10**6)
    with pytest.raises(InvalidInput, match="expected an MP4"):
        check_video("data_uri", wav_bytes(tone(0.2)), 30, 10**6)


def _png(width: int, height: int, idat: bytes, color: int = 0, interlace: int = 0) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))  # fmt: skip


def test_a_png_whose_pixel_data_ends_early_is_refused() -> None:
    """86 bytes declaring 6320x6320 with one row of pixels: Pillow fills the rest with
    black without an error, so it must be refused before it becomes a full-size frame."""
    row = b"\x00" + bytes(6320)
    truncated = _png(6320, 6320, zlib.compress(row, 9))
    with pytest.raises(InvalidInput) as err:
        check_image("image", truncated, 40_000_000)
    assert err.value.field == "image" and "truncated" in err.value.message
    # the same rows, all of them, pass (grey, and interlaced RGB)
    whole = _png(64, 48, zlib.compress(row[:65] * 48))
    assert check_image("image", whole, 40_000_000)[1] == ImageMeta(64, 48)
    # Adam7: seven passes of 64x48 grey hold 3162 bytes with their filter bytes; the 3120
    # of the plain layout are short of that
    assert check_image("image", _png(64, 48, zlib.compress(bytes(3162)), interlace=1), 10**6)
    with pytest.raises(InvalidInput, match="truncated"):
        check_image("image", _png(64, 48, zlib.compress(bytes(3120)), interlace=1), 10**6)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16", "1"])
def test_complete_pngs_of_every_kind_pass(mode: str) -> None:
    img = Image.new("RGB", (37, 23), (200, 30, 90)).convert(mode)
    out = io.BytesIO()
    img.save(out, "PNG")
    assert check_image("image", out.getvalue(), 40_000_000)[1] == ImageMeta(37, 23)
