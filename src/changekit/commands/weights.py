"""``changekit weights``: pretrained weights available offline (list, verify, add, path) and ``fetch`` when online."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import sub_app


def register(app: typer.Typer, data_app: typer.Typer) -> None:  # noqa: ARG001 - the plugin signature
    """Add the ``weights`` group."""
    weights = sub_app(app, "weights", "Pretrained weights on this machine: list, verify, add, fetch.")

    @weights.command("list")
    def list_() -> None:
        """Known and registered weights, where each is found locally, and how to get the missing ones."""
        from ..weights import available

        for row in available():
            where = row["path"] or f"missing ({row['get']})"
            typer.echo(f"{row['name']:<20} {row['source']:<10} {where}\n{'':<31}{row['description']}")

    @weights.command("verify")
    def verify(name: Annotated[list[str] | None, typer.Argument(help="names (default: every local one)")] = None) -> None:
        """Check local weight files against their sha256."""
        from ..weights import available, weight_path

        names = name or [r["name"] for r in available() if r["path"]]
        for n in names:
            typer.echo(f"{n}: ok ({weight_path(n, verify=True)})")

    @weights.command("add")
    def add(name: str, file: Annotated[Path, typer.Argument(help="a local state-dict file")]) -> None:
        """Register a local weights file under NAME with its sha256."""
        from ..weights import register as add_entry

        entry = add_entry(name, file)
        typer.echo(f"{name}: {entry['path']} (sha256 {entry['sha256']})")

    @weights.command("path")
    def path(name: str) -> None:
        """Print the local file of NAME (converted for its model where needed), for encoder_weights=..."""
        from ..weights import weight_path

        typer.echo(str(weight_path(name)))

    @weights.command("fetch")
    def fetch(name: str) -> None:
        """Download hub weights NAME into the torch hub cache (needs the internet)."""
        from ..weights import fetch as download

        typer.echo(str(download(name)))
