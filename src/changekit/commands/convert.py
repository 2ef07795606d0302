"""Checkpoint import: ``changekit convert opencd|tinycd|clearscd SRC --out DST.ckpt``.

Each command reads a released checkpoint of another framework with restricted unpickling and maps its keys onto a
registered model (:mod:`changekit.models.foreign`); the families register their own mappings. ``convert misgnet``
lives in :mod:`changekit.commands.misgnet`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import Overwrite, sub_app

def convert_to_file(source: str, src: Path, out: Path, model: str | None, overwrite: bool) -> str:
    """Convert ``src`` and write the changekit checkpoint ``out``; returns the summary line."""
    from ..engine.checkpoint import save_checkpoint
    from ..models.foreign import convert_foreign
    from ..models.registry import count_parameters
    from ..safety import check_output

    check_output(out, inputs=[src], overwrite=overwrite, what="checkpoint", kind="file")
    net, cfg = convert_foreign(source, src, model)
    save_checkpoint(out, net, cfg, source=str(src), source_format=source)
    return f"wrote {out} ({cfg['model']['name']}, {count_parameters(net):,d} parameters, from {source})"


Src = Annotated[Path, typer.Argument(help="the released checkpoint file")]
Dst = Annotated[Path, typer.Option("--out", "-o", help="changekit checkpoint to write (.ckpt)")]


def register(app: typer.Typer, data_app: typer.Typer) -> None:  # noqa: ARG001 - the plugin signature
    """Add ``convert opencd``, ``convert tinycd`` and ``convert clearscd``."""
    convert = sub_app(app, "convert", "Import checkpoints released by the original authors.")

    @convert.command("opencd")
    def opencd(
        src: Src, out: Dst,
        model: Annotated[str, typer.Option(help="registered model the checkpoint holds (bit, snunet, ...)")],
        overwrite: Overwrite = False,
    ) -> None:
        """Convert an open-cd 1.x / mmengine checkpoint (ChangeAnywhere's released models, open-cd's zoo)."""
        typer.echo(convert_to_file("opencd", src, out, model, overwrite))

    @convert.command("tinycd")
    def tinycd(src: Src, out: Dst, overwrite: Overwrite = False) -> None:
        """Convert TinyCD's released state dict (levir_best.pth / whu_best.pth)."""
        typer.echo(convert_to_file("tinycd", src, out, None, overwrite))

    @convert.command("clearscd")
    def clearscd(src: Src, out: Dst, overwrite: Overwrite = False) -> None:
        """Convert ClearSCD's released checkpoint (the authors' key names)."""
        typer.echo(convert_to_file("clearscd", src, out, None, overwrite))
