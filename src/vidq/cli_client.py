"""The client commands of the CLI: ``vidq login / submit / status / cancel / result /
requests``. They use only the SDK (``vidq.client``) and talk to a server over HTTP.

The server and token come from ``--url/--token``, else ``VIDQ_URL/VIDQ_TOKEN``, else the
file ``vidq login`` wrote: ``$XDG_CONFIG_HOME/vidq/config.json`` (``~/.config/...``),
mode 0600.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vidq.client import Client, RateLimited, Status, VidqClientError, as_input

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
    saved = _saved()
    url = url or os.environ.get("VIDQ_URL") or saved.get("url")
    token = token or os.environ.get("VIDQ_TOKEN") or saved.get("token")
    if not token:
        raise typer.BadParameter("no token: pass --token, set VIDQ_TOKEN, or run `vidq login`")
    return Client(url, token)


def _fail(exc: VidqClientError) -> typer.Exit:
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


def submit(
    model: Annotated[str, typer.Argument(help="Model id, e.g. wan22-fast-t2v (`GET /models`).")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to generate.")] = "",
    image: Annotated[str | None, typer.Option(help="First frame: a file or an URL.")] = None,
    last_image: Annotated[str | None, typer.Option(help="Last frame: a file or an URL.")] = None,
    audio: Annotated[str | None, typer.Option(help="Audio: a file or an URL.")] = None,
    video: Annotated[str | None, typer.Option(help="Video (foley): a file or an URL.")] = None,
    width: Annotated[int | None, typer.Option(help="Width (multiple of 16).")] = None,
    height: Annotated[int | None, typer.Option(help="Height (multiple of 16).")] = None,
    duration: Annotated[int | None, typer.Option(help="Seconds.")] = None,
    priority: Annotated[int | None, typer.Option(help="Queue priority, bigger first.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to save.")] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Print the request id and return.")
    ] = False,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """Submit a request, show its queue position and progress, then save the MP4."""
    inputs: dict[str, Any] = {"prompt": prompt}
    media_inputs = {"data_uri": image or video, "second_image_uri": last_image, "audio_uri": audio}
    numbers = {
        "width": width, "height": height, "duration": duration, "priority": priority, "seed": seed
    }  # fmt: skip
    try:
        inputs.update({k: as_input(v) for k, v in media_inputs.items() if v})
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {exc.filename}: {exc.strerror}") from exc
    inputs.update({k: v for k, v in numbers.items() if v is not None})
    console = Console(stderr=True)
    with _client(url, token) as client:
        try:
            handle = client.submit(model, inputs, binary_output=True)
            typer.echo(f"request {handle.request_id} submitted ({model})")
            if no_wait:
                return
            final = _follow(handle.wait, console)
            if final.status != "COMPLETED":
                typer.echo(f"request {handle.request_id} {final.status}: {final.error or ''}")
                raise typer.Exit(1)
            path = handle.download(output or Path(f"vidq-{handle.request_id}.mp4"))
        except VidqClientError as exc:
            raise _fail(exc) from exc
    typer.echo(f"saved {path} ({path.stat().st_size} bytes)")


def _follow(wait: Any, console: Console) -> Status:
    """Show the queue position while queued, then a progress bar with steps and ETA."""
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
    with _client(url, token) as client:
        try:
            st = client.get_handle(request_id).status()
        except VidqClientError as exc:
            raise _fail(exc) from exc
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
    with _client(url, token) as client:
        try:
            done = client.get_handle(request_id).cancel(running=running)
        except VidqClientError as exc:
            raise _fail(exc) from exc
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
    with _client(url, token) as client:
        try:
            path = client.get_handle(request_id).download(output)
        except VidqClientError as exc:
            raise _fail(exc) from exc
    typer.echo(f"saved {path} ({path.stat().st_size} bytes)")


def requests(
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    before: Annotated[int | None, typer.Option(help="Older than this request id.")] = None,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """List your requests, newest first."""
    with _client(url, token) as client:
        try:
            page = client.requests(limit=limit, before=before)
        except VidqClientError as exc:
            raise _fail(exc) from exc
    for r in page["requests"]:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        typer.echo(f"{r['request_id']}\t{r['model_id']}\t{r['status']}\t{created}")
    if page.get("next_before"):
        typer.echo(f"(more: --before {page['next_before']})")


COMMANDS = (login, submit, status, cancel, result, requests)
NAMES = tuple(command.__name__ for command in COMMANDS)  # as typer names them


def register(app: typer.Typer) -> None:
    """Add the client commands to the main CLI."""
    for command in COMMANDS:
        app.command()(command)
