"""The ``vidq`` command: the server commands (serve, worker, token, gc, db, config, models),
the client commands over HTTP (login, submit, status, ...) and ``vidq admin``.
``vidq.console`` runs ``main`` when the server is installed."""

from __future__ import annotations

import typer

from vidq.cli import admin, client, maintenance, tokens
from vidq.cli.serve import serve
from vidq.cli.worker import worker

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="vidq: self-hosted video generation."
)
app.command()(serve)
app.command()(worker)
app.command()(maintenance.gc)
app.command("config")(maintenance.config_show)
app.add_typer(tokens.app, name="token")
app.add_typer(maintenance.db_app, name="db")
app.add_typer(maintenance.models_app, name="models")
client.register(app)  # login, submit, status, cancel, result, requests, --version
app.add_typer(admin.app, name="admin")  # the admin routes, over HTTP


def main() -> None:
    from pydantic import ValidationError

    try:
        app()
    except ValidationError as exc:
        from pydantic_settings import BaseSettings  # a server command loaded them already

        from vidq.config import GROUPS, Settings, env_name

        classes: dict[str, type[BaseSettings]] = {cls.__name__: cls for cls in GROUPS.values()}
        classes["Settings"] = Settings
        model = classes.get(exc.title)
        if model is None:
            raise  # not a setting: a bug, keep its traceback
        # A flag or VIDQ_* value the settings refuse: name it, in one line, exit 2.
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            where = env_name(model, field) if field in model.model_fields else exc.title
            typer.echo(f"invalid setting {where} ({field}): {err['msg']}", err=True)
        raise SystemExit(2) from None
