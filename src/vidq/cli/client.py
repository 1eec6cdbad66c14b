"""The client commands of the CLI: ``vidq login / submit / status / cancel / result /
requests / usage``. They use only the SDK (``vidq.client``) and talk to a server over HTTP.

The server and token come from ``--url/--token``, else ``VIDQ_URL/VIDQ_TOKEN``, else the
file ``vidq login`` wrote: ``$XDG_CONFIG_HOME/vidq/config.json`` (``~/.config/...``),
mode 0600.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

import vidq

if TYPE_CHECKING:
    from rich.console import Console

    from vidq.client import Client, Status, ValidationError, VidqClientError

# The SDK (httpx) and rich's tables and progress bars are imported by the commands that use
# them: every `vidq` command, `vidq worker` and `vidq token create` included, loads this
# module to list its commands, and would otherwise pay for them at each start.

Url = Annotated[str | None, typer.Option("--url", help="Server URL (VIDQ_URL, `vidq login`).")]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="API token (VIDQ_TOKEN, `vidq login`).")
]


def config_path() -> Path:
    """Where ``vidq login`` keeps the server URL and token."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vidq" / "config.json"


def _saved() -> dict[str, Any]:
    try:
        data = json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _client(url: str | None, token: str | None) -> Client:
    from vidq.client import Client

    saved = _saved()
    url = url or os.environ.get("VIDQ_URL") or saved.get("url")
    token = token or os.environ.get("VIDQ_TOKEN") or saved.get("token")
    if not token:
        raise typer.BadParameter("no token: pass --token, set VIDQ_TOKEN, or run `vidq login`")
    return Client(url, token)


@contextlib.contextmanager
def connected(url: str | None, token: str | None) -> Iterator[Client]:
    """A client of the server ``--url/--token`` (or the environment, or ``vidq login``)
    name; an SDK error in the block ends the command with it (exit 1)."""
    from vidq.client import VidqClientError

    with _client(url, token) as client:
        try:
            yield client
        except VidqClientError as exc:
            raise _fail(exc) from exc


def _fail(exc: VidqClientError) -> typer.Exit:
    from vidq.client import RateLimited

    hint = ""
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        hint = f" (retry in {exc.retry_after:g} s)"
    typer.echo(f"error: {exc}{hint}", err=True)
    return typer.Exit(1)


def login(
    url: Annotated[str, typer.Option("--url", help="Server URL, e.g. http://127.0.0.1:8000.")],
    token: Annotated[str, typer.Option("--token", prompt=True, hide_input=True)],
) -> None:
    """Check a token against a server and remember both (config file, mode 0600)."""
    from vidq.client import Client, VidqClientError

    try:
        with Client(url, token) as client:
            client.requests(limit=1)
    except VidqClientError as exc:
        raise _fail(exc) from exc
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url.rstrip("/"), "token": token}, fh)
    os.chmod(path, 0o600)
    typer.echo(f"logged in to {url.rstrip('/')} (saved in {path})")


# The wire field of each input flag of ``submit``: used both to build the request and to
# name a field the server refuses by the flag that gave it (``--image``, not ``data_uri``).
FLAG_FIELDS: dict[str, str] = {
    "--prompt": "prompt", "--image": "data_uri", "--video": "data_uri",
    "--last-image": "second_image_uri", "--audio": "audio_uri", "--width": "width",
    "--height": "height", "--duration": "duration", "--priority": "priority", "--seed": "seed",
}  # fmt: skip
MEDIA_FLAGS = frozenset({"--image", "--video", "--last-image", "--audio"})


@dataclasses.dataclass
class Inputs:
    """A submit's inputs, and for each field how the user gave it (a flag, ``-i KEY``,
    the ``--json`` file) so that an error can say so."""

    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    given_as: dict[str, str] = dataclasses.field(default_factory=dict)

    def set(self, field: str, value: Any, given_as: str) -> None:
        """Give ``field`` this value (over any given before)."""
        self.values[field] = value
        self.given_as[field] = given_as

    def name(self, field: str) -> str:
        """What the user would type to give ``field``."""
        if field in self.given_as:
            return self.given_as[field]
        flags = [flag for flag, f in FLAG_FIELDS.items() if f == field]
        return "/".join(flags) if flags else f"-i {field}"

    def refused(self, exc: ValidationError) -> str:
        """A 422's errors worded with the user's names for the fields."""
        parts = []
        for e in exc.errors:
            loc = [str(x) for x in e.get("loc", [])]
            if loc[:1] == ["body"] and len(loc) > 1:
                loc = [self.name(loc[1]), *loc[2:]]
            parts.append(f"{'.'.join(loc)}: {e.get('msg', '')}" if loc else str(e.get("msg")))
        return f"HTTP {exc.status_code}: {'; '.join(parts)}"


def _media(value: str, name: str) -> str:
    """A media input as sent: URLs and data: URIs as they are, files read and encoded."""
    from vidq.client import as_input

    try:
        return as_input(value)
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {exc.filename}: {exc.strerror}", param_hint=name
        ) from exc


def _json_inputs(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--json"
        ) from exc
    except ValueError as exc:
        raise typer.BadParameter(f"{path} is not JSON: {exc}", param_hint="--json") from exc
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} holds no JSON object", param_hint="--json")
    return data


def _schema_types(prop: dict[str, Any]) -> set[str]:
    """The JSON types a schema property allows (``type``, or each of ``anyOf``)."""
    kind = prop.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {str(k) for k in kind}
    return {t for alt in prop.get("anyOf", []) if isinstance(alt, dict) for t in _schema_types(alt)}


_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_A = {"integer": "an integer", "number": "a number", "boolean": "true or false"}


def _typed(raw: str, prop: dict[str, Any], name: str) -> Any:
    """``-i KEY=VALUE``'s value as the schema types it: a media input may be a file, a
    number is converted, a boolean is true/false; the strictest type that fits wins."""
    if "contentMediaType" in prop:
        return _media(raw, name)
    types = _schema_types(prop)
    text = raw.strip()
    if "null" in types and text == "null":
        return None
    if "boolean" in types and text.lower() in _BOOLEANS:
        return _BOOLEANS[text.lower()]
    if "integer" in types and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if "number" in types:
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    if "string" in types or not types:
        return raw
    wanted = " or ".join(_A.get(t, t) for t in sorted(types) if t != "null")
    raise typer.BadParameter(f"{raw!r} is not {wanted}", param_hint=name)


def _pairs(pairs: list[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="-i")
        out.append((key.strip(), value))
    return out


def build_inputs(
    client: Client,
    model: str,
    flags: dict[str, Any],
    pairs: list[str],
    json_file: Path | None,
) -> Inputs:
    """A submit's inputs: the ``--json`` file, then ``-i KEY=VALUE`` (typed by the model's
    input schema from ``GET /models``), then the flags (``FLAG_FIELDS``) on top."""
    inputs = Inputs()
    if json_file is not None:
        for field, value in _json_inputs(json_file).items():
            inputs.set(field, value, f"{field} (--json {json_file})")
    given = _pairs(pairs)
    if given:
        found = [m for m in client.models() if m.get("id") == model]
        # An unknown model: sent as given, the server's 404 says which ids are near.
        props = found[0]["input_schema"].get("properties", {}) if found else None
        for key, raw in given:
            name = f"-i {key}"
            if props is None:
                inputs.set(key, raw, name)
                continue
            if key not in props:
                raise typer.BadParameter(
                    f"{model} has no input {key!r}; its inputs: {', '.join(props)}",
                    param_hint=name,
                )
            inputs.set(key, _typed(raw, props[key], name), name)
    for flag, value in flags.items():
        if value is not None:
            value = _media(value, flag) if flag in MEDIA_FLAGS else value
            inputs.set(FLAG_FIELDS[flag], value, flag)
    return inputs


def submit(
    model: Annotated[str, typer.Argument(help="Model id, e.g. wan22-fast-t2v (`GET /models`).")],
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="What to generate.")] = None,
    image: Annotated[str | None, typer.Option(help="First frame: a file or an URL.")] = None,
    last_image: Annotated[str | None, typer.Option(help="Last frame: a file or an URL.")] = None,
    audio: Annotated[str | None, typer.Option(help="Audio: a file or an URL.")] = None,
    video: Annotated[str | None, typer.Option(help="Video (foley): a file or an URL.")] = None,
    width: Annotated[int | None, typer.Option(help="Width (multiple of 16).")] = None,
    height: Annotated[int | None, typer.Option(help="Height (multiple of 16).")] = None,
    duration: Annotated[int | None, typer.Option(help="Seconds.")] = None,
    priority: Annotated[int | None, typer.Option(help="Queue priority, bigger first.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    pairs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="KEY=VALUE",
            help="Any input of the model's schema (`GET /models`), typed by it; repeatable, "
            "e.g. -i negative_prompt=blurry -i new_resolution=720p. A media input takes a "
            "file or an URL.",
        ),
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json",
            metavar="FILE",
            help="A JSON object of inputs, as the API takes them; -i and the flags override it.",
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to save.")] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Print the request id and return.")
    ] = False,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """Submit a request, show its queue position and progress, then save the MP4."""
    from rich.console import Console

    from vidq.client import ValidationError

    flags = {
        "--prompt": prompt, "--image": image, "--video": video, "--last-image": last_image,
        "--audio": audio, "--width": width, "--height": height, "--duration": duration,
        "--priority": priority, "--seed": seed,
    }  # fmt: skip
    with connected(url, token) as client:
        inputs = build_inputs(client, model, flags, pairs or [], json_file)
        try:
            handle = client.submit(model, inputs.values, binary_output=True)
            typer.echo(f"request {handle.request_id} submitted ({model})")
            if no_wait:
                return
            final = _follow(handle.wait, Console(stderr=True))
            if final.status != "COMPLETED":
                typer.echo(f"request {handle.request_id} {final.status}: {final.error or ''}")
                raise typer.Exit(1)
            path = handle.download(output or Path(f"vidq-{handle.request_id}.mp4"))
        except ValidationError as exc:
            typer.echo(f"error: {inputs.refused(exc)}", err=True)
            raise typer.Exit(1) from exc
    typer.echo(f"saved {path} ({path.stat().st_size} bytes)")


def _follow(wait: Any, console: Console) -> Status:
    """Show the queue position while queued, then a progress bar with steps and ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    state: dict[str, Any] = {"last": None, "task": None, "started": time.monotonic()}
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("ETA {task.fields[eta]}"),
        console=console,
        transient=False,
    )

    def on_update(status: Status) -> None:
        if status.status == "IN_QUEUE":
            if state["last"] != ("q", status.queue_position, status.hold):
                typer.echo(f"queued: position {status.queue_position}{_waiting(status, ', ')}")
                state["last"] = ("q", status.queue_position, status.hold)
            return
        if state["task"] is None:
            typer.echo("running")
            progress.start()
            state["task"] = progress.add_task("generating", total=None, eta="?")
        eta = "-" if status.eta_seconds is None else _seconds(status.eta_seconds)
        total = status.total or None
        done = status.total if status.status == "COMPLETED" and status.total else status.done
        progress.update(state["task"], completed=done, total=total, eta=eta)

    try:
        final: Status = wait(on_update=on_update, poll_interval=0.25)
    finally:
        if state["task"] is not None:
            progress.stop()
    if final.status == "COMPLETED":
        seed = "" if final.seed is None else f", seed {final.seed}"
        typer.echo(
            f"completed: {final.done}/{final.total} steps, {final.raw.get('run_seconds')} s{seed}"
        )
    return final


def _waiting(status: Status, sep: str) -> str:
    """What a queued request waits for, each part after ``sep``: an operator (its queue
    is paused) or the token's own running requests (max_running), and the ETA if there
    is one."""
    parts = []
    if status.paused:
        parts.append("paused by an operator (it starts once the queue is resumed)")
    elif status.held:
        parts.append("held until one of your running requests ends (max_running)")
    if status.eta_seconds:
        parts.append(f"ETA {_seconds(status.eta_seconds)}")
    return "".join(sep + part for part in parts)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def status(
    request_id: Annotated[str, typer.Argument(help="Request id.")],
    url: Url = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
) -> None:
    """Show a request's status, queue position, progress and ETA."""
    with connected(url, token) as client:
        st = client.get_handle(request_id).status()
    if as_json:
        typer.echo(json.dumps(st.raw, indent=2))
        return
    line = f"{st.request_id}  {st.model_id}  {st.status}"
    if st.status == "IN_QUEUE":
        line += f"  position {st.queue_position}{_waiting(st, '  ')}"
    if st.status == "IN_PROGRESS":
        line += f"  {st.done}/{st.total} steps"
        if st.eta_seconds:
            line += f"  ETA {_seconds(st.eta_seconds)}"
    if st.seed is not None:
        line += f"  seed {st.seed}"
    if st.error:
        line += f"  error: {st.error}"
    typer.echo(line)


def cancel(
    request_id: Annotated[str, typer.Argument(help="Request id.")],
    running: Annotated[
        bool, typer.Option("--running", help="Also stop it if it is already running.")
    ] = False,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """Cancel a queued request (with --running, a running one too)."""
    with connected(url, token) as client:
        done = client.get_handle(request_id).cancel(running=running)
    if done:
        typer.echo(f"request {request_id} cancelled")
    else:
        typer.echo(f"request {request_id} is running: cancellation requested")


def result(
    request_id: Annotated[str, typer.Argument(help="Request id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to save the MP4.")],
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """Download a completed request's MP4."""
    with connected(url, token) as client:
        path = client.get_handle(request_id).download(output)
    typer.echo(f"saved {path} ({path.stat().st_size} bytes)")


def requests(
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    before: Annotated[int | None, typer.Option(help="Older than this request id.")] = None,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """List your requests, newest first."""
    with connected(url, token) as client:
        page = client.requests(limit=limit, before=before)
    typer.echo("REQUEST_ID\tMODEL_ID\tSTATUS\tCREATED")  # tab-separated, as the rows
    for r in page["requests"]:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        typer.echo(f"{r['request_id']}\t{r['model_id']}\t{r['status']}\t{created}")
    if page.get("next_before"):
        typer.echo(f"(more: --before {page['next_before']})")


# What ``vidq usage`` and ``vidq admin usage`` print of each row (``GET /usage``).
USAGE_COLUMNS = ("day", "model_id", "jobs", "video_seconds", "gpu_seconds")


def usage(
    days: Annotated[int, typer.Option(help="The last N UTC days, today included (1-90).")] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """What your requests used per UTC day and model: requests, video seconds and
    GPU-seconds (running requests: their time so far)."""
    with connected(url, token) as client:
        body = client.usage(days)
    print_usage(body, as_json, "usage")


def print_usage(body: dict[str, Any], as_json: bool, title: str, *, users: bool = False) -> None:
    """A usage answer (``GET /usage``, ``GET /admin/usage``) as the server's JSON, or as
    a table with a total row."""
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    columns = (("user",) if users else ()) + USAGE_COLUMNS
    table = Table(title=f"{title} since {body['since']} (UTC)")
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("user", "day", "model_id") else "right"
        )
    for row in body["usage"]:
        table.add_row(*(str(row[c]) for c in columns))
    total = body["total"]
    table.add_row(
        "total", *([""] * (len(columns) - 4)),
        str(total["jobs"]), str(total["video_seconds"]), str(total["gpu_seconds"]),
    )  # fmt: skip
    Console().print(table)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vidq {vidq.__version__}")
        raise typer.Exit()


def options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """The options of ``vidq`` itself, before any command."""


COMMANDS = (login, submit, status, cancel, result, requests, usage)
NAMES = tuple(command.__name__ for command in COMMANDS)  # as typer names them


def register(app: typer.Typer) -> None:
    """Add the client commands and ``--version`` to the main CLI (the whole one, or the
    client-only one of an SDK install)."""
    app.callback()(options)
    for command in COMMANDS:
        app.command()(command)
