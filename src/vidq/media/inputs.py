"""A request's media inputs, from the strings the client sent to checked bytes.

``load_media`` turns every media field of a family (raw base64, a ``data:`` URI, or a URL
whose bytes ``media_urls`` named and ``media/fetch.py`` fetched beforehand) into a
``MediaInput``: bytes whose format was read from the bytes themselves and which decode
within the limits. It also computes the request's ``Plan`` (output size and length),
which needs the image's size or the media's length.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from vidq.catalog import Family
from vidq.errors import InvalidInput
from vidq.media.decode import (
    AudioMeta,
    DecodePool,
    Format,
    ImageMeta,
    Kind,
    check_audio,
    check_video,
    decode_inline,
)
from vidq.media.sizing import Plan, image_plan, text_plan, video_plan
from vidq.media.video import VideoMeta

# Which fields of each family carry media, and of what kind.
MEDIA_FIELDS: dict[Family, dict[str, Kind]] = {
    Family.T2V: {},
    Family.I2V: {"data_uri": Kind.IMAGE, "second_image_uri": Kind.IMAGE},
    Family.S2V: {"data_uri": Kind.IMAGE, "audio_uri": Kind.AUDIO},
    Family.FOLEY: {"data_uri": Kind.VIDEO},
}

BLOB_PREFIX = "blob://"  # what replaces a media field in the stored inputs
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]{0,20}):")


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Per-input limits (Settings: max_input_bytes, max_image_pixels, ...)."""

    max_bytes: int
    max_image_pixels: int
    max_audio_seconds: float
    max_video_seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class MediaInput:
    """One checked media input."""

    field: str
    data: bytes
    format: Format
    meta: ImageMeta | AudioMeta | VideoMeta


def url_of(field: str, value: str) -> str | None:
    """The http(s) URL a field's string is, or None if it is inline (base64, data: URI)."""
    scheme = _SCHEME.match(value.strip())
    if scheme is None or scheme.group(1).lower() == "data":
        return None
    if scheme.group(1).lower() not in ("https", "http"):
        raise InvalidInput(field, f"URL scheme {scheme.group(1)!r} is not allowed; use https")
    return value.strip()


def media_urls(family: Family, inputs: Mapping[str, Any]) -> dict[str, str]:
    """The media fields of a request given as URLs, ``{field: url}`` in field order: what
    must be fetched before ``load_media``."""
    urls: dict[str, str] = {}
    for field in MEDIA_FIELDS[family]:
        value = inputs.get(field)
        url = url_of(field, value) if isinstance(value, str) else None
        if url is not None:
            urls[field] = url
    return urls


def raw_bytes(field: str, value: str, limits: Limits, fetched: Mapping[str, bytes]) -> bytes:
    """The bytes a field's string stands for: base64, a data: URI, or (a URL) the bytes
    fetched for ``field``."""
    if url_of(field, value) is not None:
        return fetched[field]
    return decode_inline(field, value, limits.max_bytes)


def load_one(
    field: str,
    value: Any,
    kind: Kind,
    limits: Limits,
    fetched: Mapping[str, bytes],
    images: DecodePool,
) -> MediaInput:
    """Decode one field (or take its fetched bytes) and check it is a ``kind`` within the
    limits (images are decoded on ``images``' threads)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "must be a non-empty string (base64, data: URI or https URL)")
    data = raw_bytes(field, value, limits, fetched)
    meta: ImageMeta | AudioMeta | VideoMeta
    if kind is Kind.IMAGE:
        fmt, meta = images.check_image(field, data, limits.max_image_pixels)
    elif kind is Kind.AUDIO:
        fmt, meta = check_audio(field, data, limits.max_audio_seconds)
    else:
        fmt, meta = check_video(field, data, limits.max_video_seconds, limits.max_image_pixels)
    return MediaInput(field, data, fmt, meta)


def load_media(
    family: Family,
    inputs: dict[str, Any],
    limits: Limits,
    fetched: Mapping[str, bytes],
    images: DecodePool,
) -> dict[str, MediaInput]:
    """Every media input of a request that is present, checked (in field order);
    ``fetched`` holds the bytes of the fields ``media_urls`` named."""
    return {
        field: load_one(field, inputs[field], kind, limits, fetched, images)
        for field, kind in MEDIA_FIELDS[family].items()
        if inputs.get(field) is not None
    }


def plan_of(family: Family, inputs: dict[str, Any], media: dict[str, MediaInput]) -> Plan:
    """The output plan of a request (see ``vidq.media.sizing``)."""
    if family is Family.T2V:
        return text_plan(inputs)
    first = media["data_uri"].meta
    if family is Family.FOLEY:
        assert isinstance(first, VideoMeta)
        return video_plan(first.width, first.height, first.fps, first.frames)
    assert isinstance(first, ImageMeta)
    audio = media.get("audio_uri")
    seconds = (
        audio.meta.seconds if audio is not None and isinstance(audio.meta, AudioMeta) else None
    )
    try:
        return image_plan(inputs, first.width, first.height, seconds)
    except ValueError as exc:
        raise InvalidInput("new_resolution", str(exc)) from exc
