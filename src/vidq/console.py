"""The ``vidq`` command. With the server installed (the ``server`` extra) it is the whole CLI
of ``vidq.cli.main``; with the SDK alone it has the client commands of ``vidq.cli.client``,
and answers any other command with how to install the server rather than with a
traceback."""

from __future__ import annotations

import importlib.util
import sys

import typer

# vidq is installed from a checkout or a wheel (docs/clients.md#installing-the-sdk)
INSTALL_SERVER = "pip install '<the vidq checkout or wheel>[server]'"


def main() -> None:
    """Run the ``vidq`` command."""
    # Every server command loads the settings (pydantic-settings, of the server extra), and
    # vidq.cli.main imports them only when one runs: look for them without importing them.
    if importlib.util.find_spec("pydantic_settings") is None:
        client_only(missing="pydantic_settings", args=sys.argv[1:])
        return
    try:
        from vidq.cli import main as cli
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.partition(".")[0] == "vidq":
            raise  # a broken installation of vidq itself, not a missing extra
        client_only(missing=exc.name, args=sys.argv[1:])
    else:
        cli.main()


def client_only(missing: str, args: list[str]) -> None:
    """The CLI without the server, whose dependency ``missing`` is not installed."""
    from vidq.cli import client as cli_client

    command = next((arg for arg in args if not arg.startswith("-")), None)
    if command is not None and command not in cli_client.NAMES:
        typer.echo(
            f"vidq {command}: not a client command ({', '.join(cli_client.NAMES)}). The "
            f"server's commands (serve, worker, token, ...) need the server, which is not "
            f"installed here (no module {missing!r}). Install it with: {INSTALL_SERVER}",
            err=True,
        )
        raise SystemExit(2)
    app = typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,  # "[server]" is not markup
        help=f"vidq client: submit and follow video requests. The server: {INSTALL_SERVER}",
    )
    cli_client.register(app)
    app()
