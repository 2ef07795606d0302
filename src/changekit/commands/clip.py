"""``changekit clip-tag``: zero-shot CLIP tags for ChangeCLIP (see :mod:`changekit.clip_tags`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import Overwrite


def register(app: typer.Typer, data_app: typer.Typer) -> None:
    """Add ``clip-tag`` to the main app."""

    @app.command("clip-tag")
    def clip_tag(
        data_root: Annotated[Path, typer.Argument(help="dataset folder (A/B or time1/time2, or split folders)")],
        model: Annotated[str, typer.Option(help="CLIP model: ViT-B-16 (the seed's) or RN50")] = "ViT-B-16",
        weights: Annotated[Optional[Path], typer.Option(help="local CLIP weights (OpenAI .pt or open_clip "
                                                        "checkpoint); without it open_clip downloads them")] = None,
        classes: Annotated[Optional[Path], typer.Option(help="class names, one per line (default: the "
                                                        "seed's 56)")] = None,
        batch_size: Annotated[int, typer.Option(help="images per CLIP batch")] = 64,
        workers: Annotated[int, typer.Option(help="image-reading worker processes")] = 2,
        device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if any)")] = None,
        overwrite: Overwrite = False,
    ) -> None:
        """Write <date-folder>_clipcls_56_vit16.json beside every date folder (the tags ChangeCLIP trains on)."""
        import torch

        from ..clip_tags import MODELS, file_tag, load_clip, read_class_names, tag_dataset, tag_targets
        from ..errors import ConfigError

        try:
            import open_clip
        except ImportError:
            raise ConfigError("clip-tag needs open_clip: pip install 'changekit[clip]'") from None
        if model not in MODELS and model not in open_clip.list_models():
            raise ConfigError(f"--model: expected {' or '.join(MODELS)} (or another open_clip model), got {model!r}")
        names = read_class_names(classes)
        tag_targets(data_root, file_tag(len(names), model), overwrite)  # fail before loading CLIP
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        clip_model, preprocess, tokenizer = load_clip(model, weights, dev)
        files = tag_dataset(data_root, clip_model, preprocess, tokenizer, names, tag=file_tag(len(names), model),
                            batch_size=batch_size, num_workers=workers, device=dev, overwrite=overwrite)
        for f in files:
            typer.echo(str(f))
