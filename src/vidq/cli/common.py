"""What the server commands share: the data-folder options, logging set-up, the line that
says which database a command uses, and how a ``CannotStart`` ends a command."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from vidq.errors import CannotStart
from vidq.ops.logs import JsonFormatter
from vidq.ops.logs import configure_logging as configure

if TYPE_CHECKING:  # the settings (pydantic-settings) load with a server command only
    from vidq.config import Settings

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data folder (VIDQ_DATA_DIR).")]
Init = Annotated[
    bool,
    typer.Option(
        "--init",
        help="Create the data folder and its SQLite database if they do not exist "
        "(`vidq serve` does; otherwise a missing one is an error).",
    ),
]


def load_settings(**overrides: Any) -> Settings:
    """``Settings.load``: the settings, imported here so that pydantic-settings loads with
    a server command only (a client command starts without it)."""
    from vidq.config import Settings

    return Settings.load(**overrides)


def configure_logging(settings: Settings) -> None:
    from vidq.compose import log_setup  # the server's parts: not loaded by client commands

    configure(log_setup(settings))


def say_database(settings: Settings) -> None:
    """Say on stderr which database this command uses (stdout stays the command's own);
    with ``VIDQ_LOG_FORMAT=json`` as a JSON line, as every other stderr line then is."""
    from vidq.compose import describe_database

    line = f"vidq: using {describe_database(settings)}"
    if settings.log_format == "json":
        record = logging.makeLogRecord(
            {"name": "vidq.cli", "levelno": logging.INFO, "levelname": "INFO", "msg": line}
        )
        line = JsonFormatter().format(record)
    typer.echo(line, err=True)


def cannot_start(exc: CannotStart) -> NoReturn:
    """End the command: a usage error naming the option at fault, else the reason on
    stderr; exit 2 either way."""
    if exc.option is not None:
        raise typer.BadParameter(exc.message, param_hint=exc.option) from None
    prefix = "" if exc.message.startswith("refusing to start") else "error: "
    typer.echo(f"{prefix}{exc.message}", err=True)
    raise typer.Exit(2) from None
