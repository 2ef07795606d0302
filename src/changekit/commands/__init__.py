"""CLI commands contributed by model families and tools.

Each module here defines ``register(app: typer.Typer, data_app: typer.Typer) -> None`` that adds its commands
(e.g. ``changekit convert misgnet``, ``changekit clip-tag``, ``changekit data convert hiucd``). ``cli.py`` calls
every module's ``register`` at start-up, so a new family adds its commands without editing ``cli.py``. Keep
imports of heavy libraries inside the command functions so that ``changekit --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: the ``--overwrite`` flag every writing command shares (see :func:`changekit.safety.check_output`)
Overwrite = Annotated[bool, typer.Option("--overwrite", help="replace existing outputs in --out")]
Out = Annotated[Path, typer.Option("--out", "-o", help="output folder or file")]


def sub_app(parent: typer.Typer, name: str, help: str) -> typer.Typer:  # noqa: A002 - typer's own word
    """The ``name`` command group of ``parent``, created on first use (several plugins may add to one group)."""
    for group in parent.registered_groups:
        if group.name == name and group.typer_instance is not None:
            return group.typer_instance
    group_app = typer.Typer(no_args_is_help=True, help=help)
    parent.add_typer(group_app, name=name)
    return group_app
