"""``vidq admin ...``: the operators' commands, over HTTP with an admin token (the routes
of ``/admin/*``). Like the client commands they use only the SDK; the server and token
come from ``--url/--token``, ``VIDQ_URL/VIDQ_TOKEN`` or ``vidq login``. Tables by
default, the server's JSON with ``--json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from vidq.cli.client import TokenOpt, Url, connected, print_usage

app = typer.Typer(no_args_is_help=True, help="Operators' commands (admin token).")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer.")]


def _call(
    url: str | None, token: str | None, method: str, path: str, **params: Any
) -> dict[str, Any]:
    from vidq.client import NotFoundError  # the SDK: imported by the commands (cli/client.py)

    query = {k: v for k, v in params.items() if v is not None}
    with connected(url, token) as client:
        try:
            body: dict[str, Any] = client.request(method, path, params=query or None).json()
        except NotFoundError as exc:
            # The admin routes answer 404 to other tokens, as unknown routes do.
            typer.echo(f"error: {exc} (or this is not an admin token: see `vidq token create "
                       "--admin`)", err=True)  # fmt: skip
            raise typer.Exit(1) from exc
    return body


def _show(body: dict[str, Any], as_json: bool, title: str, rows: list[dict[str, Any]],
          columns: Sequence[str]) -> None:  # fmt: skip
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    Console().print(table)


@app.command("requests")
def requests(
    user: Annotated[str | None, typer.Option(help="Only this user's requests.")] = None,
    state: Annotated[str | None, typer.Option(help="IN_QUEUE, IN_PROGRESS, COMPLETED, ...")] = None,
    pool: Annotated[str | None, typer.Option(help="Only this pool.")] = None,
    since: Annotated[str | None, typer.Option(help="Epoch seconds or ISO 8601 time.")] = None,
    limit: Annotated[int, typer.Option(help="Page size.")] = 50,
    before: Annotated[int | None, typer.Option(help="The next_before of a page.")] = None,
    as_json: JsonOpt = False,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """Every user's requests, newest first."""
    body = _call(
        url, token, "GET", "/admin/requests", user=user, state=state, pool=pool, since=since,
        limit=limit, before=before,
    )  # fmt: skip
    columns = ("request_id", "user", "model_id", "status", "attempt", "worker", "error")
    _show(body, as_json, "requests", body["requests"], columns)
    if not as_json and body.get("next_before"):
        typer.echo(f"more: --before {body['next_before']}")


def _one(action: str, request_id: int, as_json: bool, url: str | None, token: str | None) -> None:
    body = _call(url, token, "POST", f"/admin/requests/{request_id}/{action}")
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        typer.echo(f"request {body['request_id']} ({body['user']}): {body['status']}")


@app.command("cancel")
def cancel(
    request_id: Annotated[int, typer.Argument(help="The request id.")],
    as_json: JsonOpt = False,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """Cancel any user's unfinished request."""
    _one("cancel", request_id, as_json, url, token)


@app.command("retry")
def retry(
    request_id: Annotated[int, typer.Argument(help="The request id.")],
    as_json: JsonOpt = False,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """Queue a FAILED request again with fresh attempts."""
    _one("retry", request_id, as_json, url, token)


@app.command("users")
def users(as_json: JsonOpt = False, url: Url = None, token: TokenOpt = None) -> None:
    """Per user: queued, running, completed and failed today, video seconds today."""
    body = _call(url, token, "GET", "/admin/users")
    columns = (
        "user", "queued", "running", "completed_today", "failed_today", "video_seconds_today"
    )  # fmt: skip
    _show(body, as_json, f"users (today since {body['since']})", body["users"], columns)


@app.command("usage")
def usage(
    days: Annotated[int, typer.Option(help="The last N UTC days, today included (1-90).")] = 7,
    as_json: JsonOpt = False,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """Per user: requests, video seconds and GPU-seconds per UTC day and model."""
    body = _call(url, token, "GET", "/admin/usage", days=days)
    print_usage(body, as_json, "usage of every user", users=True)


@app.command("workers")
def workers(as_json: JsonOpt = False, url: Url = None, token: TokenOpt = None) -> None:
    """Workers: pools, engines, state (and why), current job, seconds since last seen,
    jobs done."""
    body = _call(url, token, "GET", "/admin/workers")
    rows = [
        {**w, "pools": ",".join(w["pools"]),
         "engines": ",".join(f"{p}={e}" for p, e in w["engines"].items()),
         # an older server answers no state
         "state": " ".join(filter(None, (w.get("state"), w.get("state_reason"))))}
        for w in body["workers"]
    ]  # fmt: skip
    columns = (
        "name", "pools", "engines", "state", "current_job", "last_seen_seconds", "jobs_done"
    )  # fmt: skip
    _show(body, as_json, "workers", rows, columns)


def _pool(action: str, pool: str, as_json: bool, url: str | None, token: str | None) -> None:
    body = _call(url, token, "POST", f"/admin/pools/{pool}/{action}")
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        typer.echo(f"pool {body['pool']}: {'paused' if body['paused'] else 'running'}")


@app.command("pause")
def pause(
    pool: Annotated[str, typer.Argument(help="The pool (see `GET /models`).")],
    as_json: JsonOpt = False,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """Stop workers claiming from a pool (submits are still accepted)."""
    _pool("pause", pool, as_json, url, token)


@app.command("resume")
def resume(
    pool: Annotated[str, typer.Argument(help="The pool.")],
    as_json: JsonOpt = False,
    url: Url = None,
    token: TokenOpt = None,
) -> None:
    """Let workers claim from a paused pool again."""
    _pool("resume", pool, as_json, url, token)
