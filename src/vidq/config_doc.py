"""The settings described for people: ``docs/configuration.md`` and ``vidq config``.

Both come from the settings classes in ``vidq.config``: the page lists every field with its
environment variable, type, default and description, one table per group; ``vidq config``
lists the effective values, with passwords, tokens and keys masked.

Regenerate the page with ``python -m vidq.config_doc > docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from vidq.config import GROUPS, Settings, env_name

GENERAL = "general"  # the group shown for the fields of Settings itself (data_dir)
REGENERATE = "python -m vidq.config_doc > docs/configuration.md"


@dataclasses.dataclass(frozen=True, slots=True)
class SettingInfo:
    """One field of the settings, as documented."""

    group: str  # a key of GROUPS, or GENERAL
    name: str  # the field name in its group
    env: str  # the environment variable that sets it
    type: str  # what the variable holds, in words
    default: str  # the default, written as in the variable ('' when unset)
    description: str


@dataclasses.dataclass(frozen=True, slots=True)
class EffectiveSetting:
    """One field's effective value (secrets masked) and where it came from."""

    info: SettingInfo
    value: str  # '' when unset
    source: str  # "env", "flag", "default" or "default (data_dir)"


def setting_infos() -> Iterator[SettingInfo]:
    """Every field of every group, in declaration order; the ungrouped ones first."""
    for name in Settings.model_fields:
        if name not in GROUPS:
            yield _info(GENERAL, Settings, name)
    for group_name, group in GROUPS.items():
        for name in group.model_fields:
            yield _info(group_name, group, name)


def _info(group: str, model: type[BaseSettings], name: str) -> SettingInfo:
    field = model.model_fields[name]
    default = field.get_default(call_default_factory=True)
    return SettingInfo(
        group=group,
        name=name,
        env=env_name(model, name),
        type=_type_words(field),
        default="" if default is None else format_value(default),
        description=field.description or "",
    )


def effective(settings: Settings, flags: frozenset[str] = frozenset()) -> list[EffectiveSetting]:
    """The effective value of every field, secrets masked. ``flags``: the fields set by CLI
    flags, as ``group.name`` (``data_dir`` for the data folder)."""
    environ = {k.upper() for k in os.environ}
    rows = []
    for info in setting_infos():
        holder: BaseModel = settings if info.group == GENERAL else getattr(settings, info.group)
        value = getattr(holder, info.name)
        key = info.name if info.group == GENERAL else f"{info.group}.{info.name}"
        if key in flags:
            source = "flag"
        elif info.name in holder.model_fields_set and info.env in environ:
            source = "env"
        else:
            source = "default"
        if key == "store.database_url" and value is None:
            value, source = settings.resolved_database_url(), "default (data_dir)"
        elif key == "storage.storage_url" and value is None:
            value, source = settings.resolved_storage_url(), "default (data_dir)"
        shown = "" if value is None else mask(format_value(value))
        rows.append(EffectiveSetting(info, shown, source))
    return rows


def format_value(value: Any) -> str:
    """A value as it is written in its environment variable; a secret as ``***``."""
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(format_value(v) for v in value)
    return str(value)


_SECRET_PARAMS = ("password", "passwd", "token", "secret", "key", "signature", "sig")


def mask(text: str) -> str:
    """``text`` (one URL or a comma-separated list) with each URL's userinfo password and
    the query parameters that name a secret replaced by ``***``."""
    return ",".join(_mask_url(part) for part in text.split(","))


def _mask_url(url: str) -> str:
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _password = userinfo.partition(":")
        # A userinfo without ':' is a token by itself (https://TOKEN@host).
        netloc = f"{user}:***@{host}" if sep else f"***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v) for k, v in pairs],
            safe="*",
        )
    if netloc == parts.netloc and query == parts.query:
        return url  # untouched: urlunsplit would drop the empty host of sqlite:////path
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _type_words(field: FieldInfo) -> str:
    words = _annotation_words(field.annotation)
    bounds = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attr, None)
            if bound is not None:
                bounds.append(f"{sign} {bound}")
    return f"{words} {', '.join(bounds)}" if bounds else words


_WORDS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    SecretStr: "secret string",
}


def _annotation_words(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is Annotated:
        return _annotation_words(args[0])
    if origin in (typing.Union, types.UnionType):
        if all(a in (ipaddress.IPv4Network, ipaddress.IPv6Network) for a in args):
            return "IP network"
        return " or ".join(_annotation_words(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (tuple, list):
        item = _annotation_words(args[0])
        return "comma-separated list" if item == "string" else f"comma-separated {item}s"
    if origin is dict:
        return "comma-separated `key=value` pairs"
    return _WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


# -- docs/configuration.md ------------------------------------------------------------------

_INTRO = """\
# Configuration

<!-- Generated from src/vidq/config.py by `{regenerate}`; do not edit by hand. -->

Every setting of the service is an environment variable. Settings come in groups; each
table below is one group, with the variable, what it holds, its default and what it does.
Lists are comma-separated (`VIDQ_POOLS=wan22-t2v,wan22-i2v`); booleans are `true` or `false`.

Command-line flags override the environment: `--data-dir` (every server command),
`vidq serve --host --port --workers` and `vidq worker --pools`.
`vidq config` prints the effective settings, where each value came from, with passwords,
tokens and keys masked.

The command-line client (`vidq submit`, `vidq status`, ...) does not read these: it takes
`--url`/`--token`, else `VIDQ_URL`/`VIDQ_TOKEN`, else what `vidq login` saved.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The text of ``docs/configuration.md``."""
    intros = {GENERAL: "What every vidq process reads."} | {
        name: (group.__doc__ or "").strip() for name, group in GROUPS.items()
    }
    lines = [_INTRO.format(regenerate=REGENERATE).rstrip("\n")]
    current = None
    for info in setting_infos():
        if info.group != current:
            current = info.group
            lines += [
                f"\n## {current}\n",
                f"{intros[current]}\n",
                "| Variable | Type | Default | Description |",
                "|---|---|---|---|",
            ]
        default = f"`{_cell(info.default)}`" if info.default else "unset"
        lines.append(
            f"| `{info.env}` | {_cell(info.type)} | {default} | {_cell(info.description)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
