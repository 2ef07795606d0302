"""``changekit data split ROOT --out DIR``: training / validation stem lists by image or by site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import Overwrite


def register(app: typer.Typer, data_app: typer.Typer) -> None:  # noqa: ARG001 - the plugin signature
    """Add ``data split``."""

    @data_app.command("split")
    def split(
        root: Annotated[Path, typer.Argument(help="labelled pair folder (or list file)")],
        out: Annotated[Path, typer.Option("--out", "-o", help="folder for train.txt and val.txt")],
        val: Annotated[float, typer.Option("--val", help="fraction of stems for validation")] = 0.2,
        by: Annotated[str, typer.Option("--by", help="image | prefix | regex: what one group is")] = "image",
        pattern: Annotated[str | None, typer.Option("--pattern", help="--by regex: group 1 is the site")] = None,
        separator: Annotated[str, typer.Option("--separator", help="--by prefix: the prefix ends here")] = "_",
        groups: Annotated[str | None, typer.Option("--groups", help="comma-separated validation groups")] = None,
        seed: Annotated[int, typer.Option("--seed")] = 0,
        overwrite: Overwrite = False,
    ) -> None:
        """Split labelled pairs into train/val stem lists by whole images or sites (never tiles of one image)."""
        from ..data.splits import write_split

        chosen = [g.strip() for g in groups.split(",") if g.strip()] if groups else None
        counts = write_split(root, out, val_fraction=val, by=by, pattern=pattern, seed=seed, val_groups=chosen,
                             separator=separator, overwrite=overwrite)
        typer.echo(f"wrote {out}/train.txt ({counts['train']} stems) and {out}/val.txt ({counts['val']} stems, "
                   f"{counts['groups_val']} group(s)); use data.train={out}/train.txt data.val={out}/val.txt "
                   f"data.root={root}")
