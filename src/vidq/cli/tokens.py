"""``vidq token create / update / revoke / list``: API, admin and worker tokens, on the job
store itself (run where the server's data folder is, or with its database URL)."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vidq.cli.common import DataDir, Init, cannot_start, load_settings, say_database
from vidq.errors import CannotStart
from vidq.store.base import (
    MAX_WEIGHT,
    TOKEN_EXPIRY_DAYS_MAX,
    TOKEN_NAME_MAX,
    JobStore,
    Quota,
    Token,
    Usage,
)

if TYPE_CHECKING:
    from vidq.config import Settings

DAY_S = 86_400.0

app = typer.Typer(no_args_is_help=True, help="Manage API tokens.")


def open_job_store(settings: Settings, *, create: bool) -> JobStore:
    """The job store of a token command, said on stderr (stdout is the command's answer)."""
    from vidq.compose import open_job_store as open_it

    try:
        store = open_it(settings, create=create)
    except CannotStart as exc:
        cannot_start(exc)
    say_database(settings)
    return store


_LIMIT_HELP = "N, or 0 / none: unlimited"
Limit = Annotated[str | None, typer.Option(metavar="N|none", help=_LIMIT_HELP)]
_LIFT = "lift"  # parse_limit's answer for 0 / none: the limit is lifted


def parse_limit(value: str | None, option: str) -> int | str | None:
    """A limit option: None if absent, ``_LIFT`` for ``0``/``none``, else a positive
    integer; a clear error naming the option otherwise."""
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("0", "none", "unlimited"):
        return _LIFT
    if not text.isdigit() or int(text) > 2**31:
        raise typer.BadParameter(
            f"{value!r} is not a whole number of at least 0 (0 or none: unlimited)",
            param_hint=f"--{option}",
        )
    return int(text)


def _quota(base: Quota, options: dict[str, str | None]) -> Quota:
    """``base`` with the limits given on the command line."""
    changes: dict[str, Any] = {}  # limits only: int or None
    for name, raw in options.items():
        parsed = parse_limit(raw, name.replace("_", "-"))
        if parsed is not None:
            changes[name] = None if parsed == _LIFT else int(parsed)
    return dataclasses.replace(base, **changes)


_WEIGHT_HELP = (
    "Fair-share weight, 1-100: requests this token's user starts in a row when their "
    "turn comes (default 1)."
)


def _weight(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_WEIGHT:
        raise typer.BadParameter(f"must be 1 to {MAX_WEIGHT}", param_hint="--weight")
    return value


def _max_priority(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise typer.BadParameter("must be at least 0", param_hint="--max-priority")
    return value


@app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="The user this token acts as.")],
    max_priority: Annotated[
        int, typer.Option(help="Highest priority this token may ask for.")
    ] = 100,
    admin: Annotated[bool, typer.Option("--admin", help="May read operators' routes.")] = False,
    max_queued: Limit = None,
    max_running: Limit = None,
    rate_per_minute: Limit = None,
    daily_video_seconds: Limit = None,
    daily_gpu_seconds: Limit = None,
    weight: Annotated[int, typer.Option(help=_WEIGHT_HELP)] = 1,
    data_dir: DataDir = None,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker", help="A worker token: only the /worker/v1 routes (remote workers)."
        ),
    ] = False,
    pools: Annotated[
        str | None, typer.Option(help="With --worker: the pools it may claim from (default: all).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="What to call it (shown by `token list`, the web app).")
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option(help="Refused after this many days (default: never).")
    ] = None,
    init: Init = False,
) -> None:
    """Create a token; prints only the token on stdout. Limits not given come from the
    VIDQ_DEFAULT_* settings (unlimited unless set)."""
    from vidq.api.auth import create_token

    worker_pools = _worker_pools(worker, admin, pools)
    if not user.strip() or len(user) > 200:
        raise typer.BadParameter("user must be 1-200 characters")
    _max_priority(max_priority)
    _weight(weight)
    label = _name(name)
    if expires_in_days is not None and not 1 <= expires_in_days <= TOKEN_EXPIRY_DAYS_MAX:
        raise typer.BadParameter(
            f"must be 1 to {TOKEN_EXPIRY_DAYS_MAX}", param_hint="--expires-in-days"
        )
    settings = load_settings(data_dir=data_dir)
    limits = settings.limits
    defaults = Quota(
        max_queued=limits.default_max_queued,
        max_running=limits.default_max_running,
        rate_per_minute=limits.default_rate_per_minute,
        daily_video_seconds=limits.default_daily_video_seconds,
        daily_gpu_seconds=limits.default_daily_gpu_seconds,
        weight=weight,
    )
    quota = _quota(
        defaults,
        {
            "max_queued": max_queued, "max_running": max_running,
            "rate_per_minute": rate_per_minute, "daily_video_seconds": daily_video_seconds,
            "daily_gpu_seconds": daily_gpu_seconds,
        },
    )  # fmt: skip
    store = open_job_store(settings, create=init)
    expires_at = None if expires_in_days is None else store.now() + expires_in_days * DAY_S
    token = create_token(
        store, user.strip(), max_priority=max_priority, admin=admin, quota=quota,
        worker=worker, pools=worker_pools, name=label, expires_at=expires_at,
    )  # fmt: skip
    typer.echo(token)


def _name(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip() or len(value.strip()) > TOKEN_NAME_MAX:
        raise typer.BadParameter(f"must be 1-{TOKEN_NAME_MAX} characters", param_hint="--name")
    return value.strip()


def _worker_pools(worker: bool, admin: bool, pools: str | None) -> tuple[str, ...] | None:
    """The pools of a worker token (None: every pool); checks the role options."""
    from vidq.catalog import POOLS

    if pools is not None and not worker:
        raise typer.BadParameter("only worker tokens have pools", param_hint="--pools")
    if worker and admin:
        raise typer.BadParameter(
            "a token is either a worker's or an admin's", param_hint="--worker"
        )
    names = tuple(p.strip() for p in (pools or "").split(",") if p.strip())
    unknown = sorted(set(names) - set(POOLS))
    if unknown:
        raise typer.BadParameter(
            f"unknown pools: {', '.join(unknown)}; known: {', '.join(POOLS)}", param_hint="--pools"
        )
    return names or None


@app.command("update")
def token_update(
    token_id: Annotated[int, typer.Argument(help="Token id (see `token list`).")],
    max_priority: Annotated[
        int | None, typer.Option(help="Highest priority this token may ask for.")
    ] = None,
    max_queued: Limit = None,
    max_running: Limit = None,
    rate_per_minute: Limit = None,
    daily_video_seconds: Limit = None,
    daily_gpu_seconds: Limit = None,
    weight: Annotated[int | None, typer.Option(help=_WEIGHT_HELP)] = None,
    data_dir: DataDir = None,
    init: Init = False,
) -> None:
    """Change a token's limits (options not given stay as they are). ``max_running``
    and ``weight`` apply to requests submitted afterwards."""
    _max_priority(max_priority)
    _weight(weight)
    options = {
        "max_queued": max_queued, "max_running": max_running,
        "rate_per_minute": rate_per_minute, "daily_video_seconds": daily_video_seconds,
        "daily_gpu_seconds": daily_gpu_seconds,
    }  # fmt: skip
    for name, raw in options.items():  # bad values fail before the store is opened
        parse_limit(raw, name.replace("_", "-"))
    store = open_job_store(load_settings(data_dir=data_dir), create=init)
    current = next((t for t in store.list_tokens() if t.id == token_id and not t.revoked), None)
    if current is None:
        typer.echo(f"no live token with id {token_id}", err=True)
        raise typer.Exit(1)
    quota = _quota(current.quota, options)
    if weight is not None:
        quota = dataclasses.replace(quota, weight=weight)
    priority = current.max_priority if max_priority is None else max_priority
    updated = store.update_token(token_id, priority, quota)
    if updated is None:
        typer.echo(f"no live token with id {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(TOKEN_HEADER)
    typer.echo(_token_line(updated, None))


@app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="Token id (see `token list`).")],
    data_dir: DataDir = None,
    init: Init = False,
) -> None:
    """Revoke a token by id."""
    store = open_job_store(load_settings(data_dir=data_dir), create=init)
    if not store.revoke_token(token_id):
        typer.echo(f"no live token with id {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked token {token_id}")


@app.command("list")
def token_list(data_dir: DataDir = None, init: Init = False) -> None:
    """List tokens (ids, users, limits and their users' current usage; never the tokens
    themselves)."""
    store = open_job_store(load_settings(data_dir=data_dir), create=init)
    usage: dict[str, Usage] = {}
    typer.echo(TOKEN_HEADER)
    for t in store.list_tokens():
        if not t.revoked and t.user not in usage:
            usage[t.user] = store.usage(t.user)
        typer.echo(_token_line(t, usage.get(t.user)))


# The columns of ``token list`` (tab-separated, as its rows); NAME and EXPIRES last, so
# that scripts reading the earlier columns by position keep working.
TOKEN_HEADER = "\t".join(
    ["ID", "USER", "MAX_PRIORITY", "ROLE", "STATE", "QUEUED", "RUNNING", "PER_MINUTE",
     "VIDEO_S_TODAY", "GPU_S_TODAY", "WEIGHT", "NAME", "EXPIRES"]
)  # fmt: skip


def _token_line(t: Token, usage: Usage | None) -> str:
    """One token as ``token list`` shows it (``TOKEN_HEADER``): limits as used/limit, or
    the limit alone without usage (``-``: unlimited)."""
    state = "revoked" if t.revoked else "expired" if t.expired else "active"
    role = "admin" if t.admin else "user"
    if t.worker:
        role = f"worker(pools={','.join(t.pools) if t.pools else 'all'})"
    q = t.quota

    def shown(limit: int | None, used: float | None) -> str:
        cap = "-" if limit is None else str(limit)
        return cap if used is None else f"{used:g}/{cap}"

    u = usage
    today = None if u is None else u.video_seconds_today
    return "\t".join(
        [
            str(t.id), t.user, str(t.max_priority), role, state,
            shown(q.max_queued, None if u is None else u.queued),
            shown(q.max_running, None if u is None else u.running),
            shown(q.rate_per_minute, None if u is None else u.last_minute),
            shown(q.daily_video_seconds, today),
            shown(q.daily_gpu_seconds, None if u is None else round(u.gpu_seconds_today, 1)),
            str(q.weight),
            (t.name or "-").replace("\t", " "),
            "-" if t.expires_at is None else _utc(t.expires_at),
        ]
    )  # fmt: skip


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
