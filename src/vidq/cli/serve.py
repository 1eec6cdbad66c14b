"""``vidq serve``: the API with its in-process workers and the retention collector."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidq.cli.common import DataDir, cannot_start, configure_logging, load_settings
from vidq.errors import CannotStart


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    data_dir: DataDir = None,
    workers: Annotated[int | None, typer.Option(help="In-process workers (0: API only).")] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this PEM certificate (chain).")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="The certificate's PEM key.")] = None,
) -> None:
    """Run the API and N in-process workers on the embedded (or configured) backends."""
    import uvicorn

    from vidq.compose import build_api

    settings = load_settings(
        data_dir=data_dir, server={"host": host, "port": port, "workers": workers}
    )
    configure_logging(settings)
    try:
        api = build_api(settings)
    except CannotStart as exc:
        cannot_start(exc)
    if api.admin_token is not None:
        typer.echo(f"Created admin token (shown once, keep it): {api.admin_token}")
    config = uvicorn.Config(
        api.app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        server_header=False,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
    )
    scheme = "https" if ssl_certfile else "http"
    server = settings.server
    api.start()
    typer.echo(f"vidq serving on {scheme}://{server.host}:{server.port} ({server.workers} workers)")
    try:
        uvicorn.Server(config).run()
    finally:
        api.stop()
