"""The JSON body of a submit, read strictly and within bounds, the same on both dialects.

Left to the framework, some bodies were a 400 or a 500 and others reached the job store:
not UTF-8, an integer of 5,000 digits or nesting past Python's recursion limit were 400
"There was an error parsing the body"; nesting of a few hundred was a 500 when the inputs
were dumped; a NUL or a lone surrogate in any string was stored, and PostgreSQL's
``inputs::jsonb`` then failed on every read of the job; unknown fields of any size were
stored in the job row. Here each is refused before anything is stored:

- the body is UTF-8 JSON whose top level is an object, and containers nest at most
  ``MAX_DEPTH`` deep: else 422;
- integers have at most ``MAX_INT_DIGITS`` digits, numbers are finite (no NaN, Infinity or
  1e999), and no string, value or key, holds a NUL or a lone surrogate: else 422 naming
  the field;
- the JSON apart from the media fields (the prompt, the options and unknown fields: what
  is stored with the job) is at most ``max_fields_bytes``: else 413 naming the limit.

Every 422 has the ``detail`` of validation errors, a list of ``{loc, msg, type}``.

Unknown fields stay accepted and forwarded to the engine: the spec says "Arbitrary JSON
accepted and forwarded to the model", and fal-style clients send options that a given
deployment may not know. What is bounded is their size, with everything else that is not
media.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from vidq.api.context import context
from vidq.catalog import Model
from vidq.errors import InvalidInput, PayloadTooLarge
from vidq.media.inputs import MEDIA_FIELDS

MAX_DEPTH = 32  # far more than any model option needs; pydantic fails past ~250
MAX_INT_DIGITS = 20  # every int64 and uint64
_SURROGATE = re.compile("[\ud800-\udfff]")
# json.loads recurses once per nesting level. A body nested near the recursion limit
# stops it with RecursionError, but a finalizer that runs meanwhile (a garbage
# collection, a socket closed from another thread's garbage) fails too, as an "exception
# ignored" and whatever it was to clean up. So nesting past this is refused before
# json.loads, by a scan that does not recurse; up to it, ``_walk`` names where.
_SCAN_DEPTH = 512  # json.loads parses 512 levels well within the recursion limit
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # a string (skipped whole), a bracket
_LOC_KEY_MAX = 100  # a key is echoed in an error's loc at most this long


@dataclasses.dataclass(frozen=True, slots=True)
class JsonBody:
    """A checked body: the object, and the size of each top-level field as JSON text
    (key and value)."""

    data: dict[str, Any]
    sizes: dict[str, int]


@dataclasses.dataclass(frozen=True, slots=True)
class _Refused:
    """A number the JSON hooks refuse; ``_walk`` reports it where it was found."""

    message: str
    kind: str


def _int(text: str) -> int | _Refused:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Refused(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})", _TOO_LONG)
    return int(text)


def _float(text: str) -> float | _Refused:
    value = float(text)
    if not math.isfinite(value):
        return _Refused(f"{text[:30]} is out of range for a number", _NOT_FINITE)
    return value


def _constant(text: str) -> _Refused:
    return _Refused(f"{text} is not a JSON number", _NOT_FINITE)


_TOO_LONG, _NOT_FINITE = "int_parsing_size", "finite_number"  # pydantic's names for these


def _invalid(message: str, kind: str = "json_invalid") -> InvalidInput:
    return InvalidInput("", message, kind=kind, loc=[])


def parse(raw: bytes, max_fields_bytes: int) -> JsonBody:
    """``raw`` as a checked JSON object (module docstring), or InvalidInput (422) /
    PayloadTooLarge (413)."""
    # Every container and every element after the first costs one '[', '{' or ','. Outside
    # strings those belong to the fields apart from media (media strings hold at most a
    # few), so more of them than the limit's bytes is over it. Counting first bounds the
    # objects json.loads would build: '[{},{},...' in a 64 MB body is 21 million dicts.
    opening = raw.count(b"[") + raw.count(b"{")
    if opening + raw.count(b",") > max_fields_bytes:
        raise PayloadTooLarge(_over(max_fields_bytes))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"the body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise _invalid("Field required", "missing")
    if opening > _SCAN_DEPTH and _deeper_than(text, _SCAN_DEPTH):
        raise _invalid(f"nested deeper than {MAX_DEPTH}", "json_depth")
    try:
        data = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise _invalid(f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        if isinstance(data, _Refused):
            raise _invalid(data.message, data.kind)
        raise _invalid("the body must be a JSON object", "dict_type")
    sizes = {}
    for key, value in data.items():
        _check_string(key, [key])
        sizes[key] = _json_size(key) + 1 + _walk(value, [key])
    return JsonBody(data, sizes)


def _deeper_than(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` opens more than ``limit`` containers inside each other
    (brackets inside strings do not count). Iterative; one step per string and bracket,
    and ``parse`` bounds the brackets by the fields limit before it calls this."""
    depth = 0
    for match in _TOKEN.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _walk(value: Any, loc: list[str | int]) -> int:
    """Check ``value`` (depth, strings); its size as JSON text. Iterative: the depth is
    what is being checked."""
    size = 0
    stack: list[tuple[Any, list[str | int]]] = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            _check_string(item, where)
            size += _json_size(item)
        elif isinstance(item, _Refused):
            raise InvalidInput("", item.message, kind=item.kind, loc=_shown(where))
        elif isinstance(item, dict | list):
            if len(where) + 1 > MAX_DEPTH:  # the body itself is the first level
                raise InvalidInput(
                    "", f"nested deeper than {MAX_DEPTH}", kind="json_depth", loc=_shown(where)
                )
            size += 2 + max(0, len(item) - 1)
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_string(key, [*where, key])
                    size += _json_size(key) + 1
                    stack.append((child, [*where, key]))
            else:
                stack.extend((child, [*where, i]) for i, child in enumerate(item))
        else:
            size += len(json.dumps(item))
    return size


def _check_string(text: str, where: list[str | int]) -> None:
    """NUL and lone surrogates cannot be stored (PostgreSQL text and jsonb refuse them)."""
    if "\x00" in text:
        raise InvalidInput(
            "", "must not contain NUL (\\u0000)", kind="string_unicode", loc=_shown(where)
        )
    if not text.isascii() and (bad := _SURROGATE.search(text)):
        raise InvalidInput(
            "",
            f"must not contain a lone surrogate (\\u{ord(bad.group()):04x})",
            kind="string_unicode",
            loc=_shown(where),
        )


def _shown(where: list[str | int]) -> list[str | int]:
    """``where`` as an error's loc: long keys cut, unprintable ones escaped."""
    return [
        part if isinstance(part, int) else part[:_LOC_KEY_MAX].encode("unicode_escape").decode()
        for part in where
    ]


def _json_size(text: str) -> int:
    return len(text) + 2 if text.isascii() else len(text.encode("utf-8")) + 2


def _over(limit: int) -> str:
    return (
        f"the request's JSON apart from media fields is over the limit of {limit} bytes "
        "(VIDQ_MAX_FIELDS_BYTES)"
    )


def check_fields_size(body: JsonBody, media: Collection[str], limit: int) -> None:
    """413 if the body apart from its ``media`` fields (the strings that become blobs) is
    over ``limit`` bytes of JSON."""
    kept = {
        key: size
        for key, size in body.sizes.items()
        if key not in media or not isinstance(body.data[key], str)
    }
    total = 2 + sum(kept.values()) + max(0, len(kept) - 1)
    if total > limit:
        message = f"{_over(limit)}: {total} bytes"
        if kept:
            largest = max(kept, key=kept.__getitem__)
            message += f"; the largest field is '{_shown([largest])[0]}' ({kept[largest]} bytes)"
        raise PayloadTooLarge(message)


# Bodies up to this size are parsed on the event loop (tens of microseconds); a thread
# hop costs more than that. Larger ones (data URIs of images) are parsed in a thread.
_INLINE_PARSE_BYTES = 16 * 1024


class JsonRequest(Request):
    """A request whose ``json()`` is ``parse``'s (parsed once; off the event loop unless
    the body is small)."""

    _checked: JsonBody | None = None

    async def checked(self) -> JsonBody:
        if self._checked is None:
            limit = context(self).settings.limits.max_fields_bytes
            raw = await self.body()
            if len(raw) <= _INLINE_PARSE_BYTES:
                self._checked = parse(raw, limit)
            else:
                self._checked = await run_in_threadpool(parse, raw, limit)
        return self._checked

    async def json(self) -> Any:
        return (await self.checked()).data


class JsonRoute(APIRoute):
    """A route whose JSON body is read by ``parse``. FastAPI answers 400 for any error but
    a syntax error while it reads a body, so a route with a body parameter has it parsed
    (and refused) before FastAPI starts; FastAPI then gets the parsed object."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        parse_first = self.body_field is not None

        async def route(request: Request) -> Response:
            checked = JsonRequest(request.scope, request.receive)
            if parse_first:
                await checked.checked()
            return await handler(checked)

        return route


async def submitted(
    request: Request, model: Model, also_media: Collection[str] = ()
) -> dict[str, Any]:
    """The checked body of a submit to ``model`` (on a ``JsonRoute``), its fields apart
    from media within ``max_fields_bytes``; ``also_media``: more names of media fields
    (fal's ``image_url``...)."""
    assert isinstance(request, JsonRequest), "submit routes are JsonRoutes"
    body = await request.checked()
    limit = context(request).settings.limits.max_fields_bytes
    check_fields_size(body, {*MEDIA_FIELDS[model.family], *also_media}, limit)
    return body.data
