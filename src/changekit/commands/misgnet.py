"""MISGNet commands: ``changekit convert misgnet SRC.pth --out DST.ckpt``.

The top-level ``convert`` group (checkpoint import) is shared: this module reuses it when another module
created it first (and creates it otherwise), so other families can add ``convert <family>`` commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import Overwrite, sub_app


def register(app: typer.Typer, data_app: typer.Typer) -> None:  # noqa: ARG001 - the plugin signature
    """Add ``convert misgnet``."""
    convert = sub_app(app, "convert", "Import checkpoints released by the original authors.")

    @convert.command("misgnet")
    def misgnet(
        src: Annotated[Path, typer.Argument(help="the authors' checkpoint (pickled MyNet or EMA, or a state_dict)")],
        out: Annotated[Path, typer.Option("--out", help="changekit checkpoint to write (.ckpt)")],
        keep_stage4: Annotated[bool, typer.Option("--keep-stage4", help="keep the unused PVT stage 4")] = False,
        overwrite: Overwrite = False,
    ) -> None:
        """Convert a released MISGNet checkpoint without the authors' code (restricted unpickling)."""
        from ..engine.checkpoint import save_checkpoint
        from ..errors import DatasetNotFoundError
        from ..models.misgnet.convert import convert_checkpoint
        from ..safety import check_output

        if not src.exists() and not src.is_symlink():
            raise DatasetNotFoundError(f"{src}: checkpoint not found")
        check_output(out, inputs=[src], overwrite=overwrite, what="checkpoint", kind="file")
        model, cfg = convert_checkpoint(src, keep_stage4=keep_stage4)
        save_checkpoint(out, model, cfg, source=str(src))
        n = sum(p.numel() for p in model.parameters())
        typer.echo(f"wrote {out} (misgnet, {n:,d} parameters, keep_stage4={keep_stage4})")
