"""Semantic change detection data commands: ``changekit data convert hiucd|second``.

The ``convert`` group under ``changekit data`` is shared: this module reuses it when another module created it
first (and creates it otherwise), so several families can add ``data convert <format>`` commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import Overwrite, sub_app


def register(app: typer.Typer, data_app: typer.Typer) -> None:  # noqa: ARG001 - the plugin signature
    """Add ``data convert hiucd`` and ``data convert second``."""
    convert = sub_app(data_app, "convert", "Convert published data set formats.")

    @convert.command("hiucd")
    def hiucd(
        src: Annotated[Path, typer.Argument(help="Hi-UCD split folder (two year folders and a mask folder)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="output folder (A/, B/, mask/, list.txt)")],
        tile: Annotated[int, typer.Option(help="tile size (ClearSCD: 512); 0 keeps whole images")] = 512,
        a: Annotated[Path | None, typer.Option("--a", help="date-1 image folder (auto if omitted)")] = None,
        b: Annotated[Path | None, typer.Option("--b", help="date-2 image folder")] = None,
        mask: Annotated[Path | None, typer.Option("--mask", help="3-channel mask folder")] = None,
        overwrite: Overwrite = False,
    ) -> None:
        """Hi-UCD masks -> ClearSCD convention (classes - 1, unlabeled 9; change - 1, unlabeled 255)."""
        from ..data.convert import convert_hiucd

        res = convert_hiucd(src, out, tile=tile, a=a, b=b, mask=mask, overwrite=overwrite)
        typer.echo(f"wrote {res['tiles']} pairs from {res['pairs']} images to {out} "
                   f"(train with data.train: {out / 'list.txt'})")

    @convert.command("second")
    def second(
        src: Annotated[Path, typer.Argument(help="folder with im1/ im2/ label1/ label2/ (RGB labels)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
        classes: Annotated[str, typer.Option(help="class table: second, hiucd or a classes.yaml")] = "second",
        overwrite: Overwrite = False,
    ) -> None:
        """RGB-coded SECOND-style labels -> palette PNG class indices (0 = no change for SECOND)."""
        from ..data.convert import convert_rgb_labels

        res = convert_rgb_labels(src, out, classes=classes, overwrite=overwrite)
        typer.echo(f"wrote {res['pairs']} pairs to {out}")
