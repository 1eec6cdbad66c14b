"""Local files in and out of the SDK: media inputs encoded as data URIs, finished videos
written atomically. Standard library only."""

from __future__ import annotations

import base64
import mimetypes
import os
import tempfile
from pathlib import Path

_MEDIA_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
    ".m4a": "audio/mp4", ".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
}  # fmt: skip


def encode_file(path: str | os.PathLike[str]) -> str:
    """A local image, audio or video file as a ``data:<type>;base64,...`` URI."""
    p = Path(path)
    kind = _MEDIA_TYPES.get(p.suffix.lower()) or mimetypes.guess_type(p.name)[0]
    data = p.read_bytes()
    return f"data:{kind or 'application/octet-stream'};base64,{base64.b64encode(data).decode()}"


def as_input(value: str | os.PathLike[str]) -> str:
    """What to send for a media input: URLs and data: URIs as they are, files encoded."""
    text = os.fspath(value)
    if text.startswith(("http://", "https://", "data:")):
        return text
    return encode_file(text)


def write_atomically(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, so that a
    reader never sees half a video."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path
