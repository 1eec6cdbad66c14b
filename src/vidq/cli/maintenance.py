"""Maintenance commands on the configured backends: ``vidq gc`` (retention now),
``vidq db upgrade`` (migrations), ``vidq config`` (the effective settings) and
``vidq models check`` (the wan engine's weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidq.cli.common import (
    DataDir,
    Init,
    cannot_start,
    configure_logging,
    load_settings,
    say_database,
)
from vidq.errors import CannotStart

db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
models_app = typer.Typer(no_args_is_help=True, help="Local model weights.")


def gc(
    data_dir: DataDir = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    init: Init = False,
) -> None:
    """Delete expired inputs, outputs and job rows now (VIDQ_INPUT_TTL, VIDQ_OUTPUT_TTL,
    VIDQ_JOB_TTL); prints a JSON report. Waits for no one: exits 3 if another process is
    collecting."""
    import json

    from vidq.compose import collector, open_backends, process_name

    settings = load_settings(data_dir=data_dir)
    configure_logging(settings)
    try:
        backends = open_backends(settings, create=init)
    except CannotStart as exc:
        cannot_start(exc)
    say_database(settings)
    try:
        c = collector(settings, backends.store, backends.storage, process_name("gc"))
        report = c.dry_run() if dry_run else c.run_once(lease_s=settings.retention.gc_lease)
    finally:
        backends.close()
    if report is None:
        typer.echo("another process is collecting (the gc lease is taken)", err=True)
        raise typer.Exit(3)
    typer.echo(json.dumps({"dry_run": dry_run, **report.as_json()}, indent=2))


def config_show(data_dir: DataDir = None) -> None:
    """Print the effective settings: group, name, variable, value and where it came from
    (env, flag, default). Passwords, tokens and keys are masked."""
    from vidq.config_doc import effective

    settings = load_settings(data_dir=data_dir)
    rows = [("GROUP", "NAME", "VARIABLE", "VALUE", "SOURCE")]
    flags = frozenset({"data_dir"} if data_dir is not None else ())
    for row in effective(settings, flags):
        info = row.info
        rows.append((info.group, info.name, info.env, row.value or "(unset)", row.source))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:4], widths, strict=True)]
        typer.echo("  ".join([*cells, r[4]]))


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Apply the migration history to the configured database (a SQLite database that does
    not exist yet is created)."""
    from vidq.compose import sqlite_path
    from vidq.store.migrate import upgrade

    settings = load_settings(data_dir=data_dir)
    url = settings.resolved_database_url()
    path = sqlite_path(url)
    if path is not None:  # the explicit migration command may create a SQLite database
        path.parent.mkdir(parents=True, exist_ok=True)
    say_database(settings)
    upgrade(url)
    typer.echo("database is up to date")


@models_app.command("check")
def models_check(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="A models file (TOML) to check, as `vidq serve` and `vidq worker` check "
            "VIDQ_MODELS_FILE at start, without starting anything; exit 2 when it is refused."
        ),
    ] = None,
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="Weights folder (VIDQ_MODELS_DIR).")
    ] = None,
) -> None:
    """With FILE: check that models file and list its ids. Without: report, per model id
    of the wan engine (of VIDQ_MODELS_FILE, or the shipped file), which weight files are
    present and missing."""
    from vidq.catalog import load
    from vidq.engines.wan_layout import wan_weights
    from vidq.models_file import ModelsFileError

    settings = load_settings(wan={"models_dir": models_dir})
    try:
        models = load(file or settings.models_file)
    except ModelsFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if file is not None:
        for m in models.values():
            extra = " (opt-in)" if m.opt_in else ""
            aliases = "".join(f", fal {a.endpoint}" for a in m.fal)
            typer.echo(
                f"{m.id}: {m.family.value}, pool {m.pool}{extra}, engine {m.engine}{aliases}"
            )
        typer.echo(f"{file}: {len(models)} models, ok")
        return
    wan = settings.wan
    if wan.models_dir is None:
        typer.echo("VIDQ_MODELS_DIR (or --models-dir) is not set", err=True)
        raise typer.Exit(2)
    typer.echo(f"models dir: {wan.models_dir} (wan base: {wan.base})")
    incomplete = 0
    for model in models.values():
        if model.engine != "wan" or model.family.value not in ("t2v", "i2v"):
            typer.echo(f"{model.id}: not a wan-engine model (engine of pool {model.pool})")
            continue
        weights = wan_weights(wan.models_dir, model.family.value, wan.base)
        missing = set(weights.missing())
        incomplete += bool(missing)
        note = " (fp8: also needs a GPU of compute capability 8.9+ and torchao)"
        state = "MISSING" if missing else "ok"
        typer.echo(f"{model.id}: {state}{note if model.variant == 'fp8' else ''}")
        for path in weights.required():
            typer.echo(f"  {'missing' if path in missing else 'present'}: {path}")
    if incomplete:
        raise typer.Exit(1)
