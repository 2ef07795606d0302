"""``changekit ensemble A.ckpt B.ckpt ... --out E.ckpt``: average several trained models (e.g. seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import Overwrite


def register(app: typer.Typer, data_app: typer.Typer) -> None:  # noqa: ARG001 - the plugin signature
    """Add ``ensemble``."""

    @app.command("ensemble")
    def ensemble(
        checkpoints: Annotated[list[Path], typer.Argument(help="two or more checkpoints of one task (model.ckpt, "
                                                               "best.ckpt or last.ckpt), e.g. runs of several seeds")],
        out: Annotated[Path, typer.Option("--out", "-o", help="the ensemble checkpoint to write")],
        threshold: Annotated[float | None, typer.Option(help="its change threshold, 0..1 [default: the mean of "
                                                             "the members' thresholds]")] = None,
        overwrite: Overwrite = False,
    ) -> None:
        """One checkpoint that averages the members' probabilities; use it with test, predict and export."""
        from ..engine.ensemble import make_ensemble

        info = make_ensemble(checkpoints, out, threshold=threshold, overwrite=overwrite)
        typer.echo(f"wrote {info['checkpoint']}: {len(info['members'])} members ({', '.join(info['members'])}), "
                   f"{info['params']:,} parameters, threshold {info['threshold']:g} "
                   f"(members: {', '.join(f'{t:g}' for t in info['thresholds'])})")
