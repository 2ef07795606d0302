"""Zero-shot CLIP tagging of change-detection images (ChangeCLIP's ``tools/clip_inference.py``, made portable).

For every image of both dates of every split, CLIP scores the 56 remote-sensing class names of the seed
(``resources/rs_classes_56.txt``; the prompt is the raw class name, no template) and the softmax over the
classes of ``logit_scale * cos(image, text)`` is written, ranked, to one JSON file per date folder:
``<split>/<date-folder>_clipcls_<n>_<model>.json`` (``time1_clipcls_56_vit16.json`` for SYSU-CD with ViT-B/16),
a list of ``{"image_path": ..., "<class>": "0.1234", ...}`` in descending probability, as the seed writes them.
Unlike the seed, ``image_path`` is relative to the data root, so the data folder can be moved; the reader
(:mod:`changekit.data.tags`) matches images by file stem and accepts the seed's absolute paths too.

CLIP comes from open_clip: weights from a local file (OpenAI's TorchScript ``.pt`` or an open_clip
checkpoint), or open_clip's usual download when online. Images are read with changekit's reader (any band count
or bit depth: the first three bands, scaled to 8 bits) and preprocessed like CLIP (bicubic resize of the
short side, centre crop, CLIP mean/std).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data.discover import _subdirs, detect_layout
from .data.io import IMAGE_SUFFIXES, atomic_path, read_image
from .errors import ChangekitError, ConfigError, DatasetNotFoundError

log = logging.getLogger(__name__)
MODELS = {"ViT-B-16": "vit16", "RN50": "rn50"}  # open_clip name -> the seed's file tag
OPENAI_NAMES = {"ViT-B-16": "ViT-B/16", "RN50": "RN50"}


def read_class_names(path: str | Path | None = None) -> list[str]:
    """Class names, one per line; as in the seed, only the part before ``", "`` counts (the seed's file also
    carries a Chinese translation). ``None``: the bundled 56 names."""
    if path is None:
        text = resources.files("changekit").joinpath("resources/rs_classes_56.txt").read_text(encoding="utf-8")
        source = "rs_classes_56.txt"
    else:
        if not Path(path).is_file():
            raise DatasetNotFoundError(f"{path}: class-name file not found")
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    names = [line.strip().split(", ")[0] for line in text.splitlines() if line.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"{source}: need at least two distinct class names, one per line")
    bad = [n for n in names if "|" in n or n == "image_path"]
    if bad:
        raise ConfigError(f"{source}: class names may not contain '|' or be 'image_path': {bad[:3]}")
    return names


def file_tag(num_classes: int, model_name: str) -> str:
    """The seed's file tag, e.g. ``56_vit16``."""
    return f"{num_classes}_{MODELS.get(model_name, model_name.lower().replace('-', '').replace('/', ''))}"


def _model_from_file(open_clip: Any, model_name: str, path: Path, device: str | torch.device) -> nn.Module:
    """A CLIP model from a local file, without running code from it.

    OpenAI's TorchScript archives are never given to ``torch.jit.load``: their tensors are read by the restricted
    unpickler and the model is rebuilt from them as open_clip does for OpenAI weights (fp16-rounded, then fp32).
    Other files are checked with ``weights_only`` first, then loaded by open_clip (which reads them
    ``weights_only`` too) so its key conversions apply.
    """
    from .safeload import is_torchscript, load_tensors, restricted_load

    def unfit(exc: BaseException) -> ConfigError:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        return ConfigError(f"{path}: cannot load it as {model_name} CLIP weights ({first[:200]})")

    if is_torchscript(path):
        state = restricted_load(path, "CLIP weights file")
        for key in ("input_resolution", "context_length", "vocab_size"):
            state.pop(key, None)
        try:
            from open_clip.model import build_model_from_openai_state_dict

            model = build_model_from_openai_state_dict(state, cast_dtype=None)  # fp32, as precision="fp32"
        except Exception as exc:  # noqa: BLE001 - open_clip raises many types for unfit state dicts
            raise unfit(exc) from None
        model = model.to(device).float()
        model.visual.image_mean, model.visual.image_std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
        return model
    load_tensors(path, "CLIP weights file")  # one line for an empty, truncated, cyclic or planted file
    try:
        return open_clip.create_model(model_name, pretrained=str(path), device=device)
    except Exception as exc:  # noqa: BLE001 - open_clip raises many types for unfit files
        raise unfit(exc) from None


def load_clip(model_name: str = "ViT-B-16", weights: str | Path | None = None, device: str | torch.device = "cpu"
              ) -> tuple[nn.Module, Callable[[Any], torch.Tensor], Callable[[list[str]], torch.Tensor]]:
    """An open_clip model in eval mode, its image preprocessing and its tokenizer.

    Raises:
        ConfigError: open_clip is missing, or no weights can be obtained (offline without ``weights``).
        DatasetNotFoundError: ``weights`` does not exist.
    """
    try:
        import open_clip
    except ImportError:
        raise ConfigError("CLIP tagging needs open_clip: pip install 'changekit[clip]' (open-clip-torch)") from None
    how = (f"download OpenAI's {OPENAI_NAMES.get(model_name, model_name)} weights (e.g. {model_name}.pt, the file "
           f"the `clip` package fetches, or open_clip's '{model_name}' 'openai' checkpoint) and pass --weights FILE")
    if weights is not None:
        path = Path(weights)
        if not path.exists() and not path.is_symlink():
            raise DatasetNotFoundError(f"{path}: CLIP weights not found; {how}")
        model = _model_from_file(open_clip, model_name, path, device)
    else:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("CHANGEKIT_OFFLINE"):
            raise ConfigError(f"no CLIP weights given and downloads are disabled (offline); {how}")
        try:
            model = open_clip.create_model(model_name, pretrained="openai", device=device)
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            raise ConfigError(f"could not download the CLIP weights ({type(exc).__name__}); {how}") from None
    model.eval()
    size = getattr(model.visual, "image_size", 224)
    preprocess = open_clip.image_transform(size, is_train=False)
    return model, preprocess, open_clip.get_tokenizer(model_name)


def to_pil_rgb(array: np.ndarray) -> Any:
    """An ``(H, W[, C])`` image of any dtype as an 8-bit RGB PIL image (first three bands, grey replicated)."""
    from PIL import Image

    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] < 3:
        array = np.repeat(array[:, :, :1], 3, axis=2)
    array = array[:, :, :3]
    if array.dtype != np.uint8:
        top = np.iinfo(array.dtype).max if np.issubdtype(array.dtype, np.integer) else 1.0
        array = np.clip(array.astype(np.float32) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


class _Images(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[Path], preprocess: Callable[[Any], torch.Tensor]) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(to_pil_rgb(read_image(self.paths[i])))  # type: ignore[arg-type]


@torch.inference_mode()
def class_probabilities(
    model: nn.Module, preprocess: Callable[[Any], torch.Tensor], tokenizer: Callable[[list[str]], torch.Tensor],
    paths: Sequence[Path], classes: Sequence[str], batch_size: int = 64, num_workers: int = 0,
    device: str | torch.device = "cpu", progress: bool = False, desc: str = "",
) -> np.ndarray:
    """Softmax over ``classes`` of ``logit_scale * cos(image, class name)`` per image: ``(len(paths), K)``."""
    dev = torch.device(device)
    text = text_features(model, tokenizer, classes, dev)
    loader = torch.utils.data.DataLoader(_Images(paths, preprocess), batch_size=batch_size, num_workers=num_workers)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc=desc, unit="batch")  # type: ignore[assignment]
    out = [image_probabilities(model, images.to(dev), text) for images in loader]
    return torch.cat(out).numpy() if out else np.zeros((0, len(classes)), np.float32)


def text_features(model: nn.Module, tokenizer: Callable[[list[str]], torch.Tensor], classes: Sequence[str],
                  device: torch.device) -> torch.Tensor:
    """Unit-length CLIP embeddings of the class names, ``(K, D)`` (the raw names: the seed uses no template)."""
    text = model.encode_text(tokenizer(list(classes)).to(device))
    return text / text.norm(dim=-1, keepdim=True)


def image_probabilities(model: nn.Module, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes of ``logit_scale * cos(image, class)``: ``(B, K)`` float32 on the CPU."""
    feats = model.encode_image(images)
    feats = feats / feats.norm(dim=-1, keepdim=True)
    return (model.logit_scale.exp() * feats @ text.t()).softmax(-1).float().cpu()


def ranked_entry(image_path: str, probs: np.ndarray, classes: Sequence[str]) -> dict[str, str]:
    """The seed's JSON object: ``image_path`` then every class as a 4-decimal string, most probable first."""
    entry = {"image_path": image_path}
    for i in sorted(range(len(classes)), key=lambda j: float(probs[j]), reverse=True):  # stable, like the seed
        entry[classes[i]] = f"{float(np.float32(probs[i])):.4f}"
    return entry


def find_date_folders(root: str | Path) -> list[Path]:
    """The date folders (A/B, time1/time2, im1/im2) of ``root`` itself or of each split folder below it."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: data folder not found")
    candidates = [root] + list(_subdirs(root).values())
    folders: list[Path] = []
    for cand in candidates:
        try:
            lay = detect_layout(cand, require_labels=False)
        except ChangekitError:
            continue
        dirs = _subdirs(cand)
        folders += [dirs[lay.a.lower()], dirs[lay.b.lower()]]
        if cand == root:
            break
    if not folders:
        raise DatasetNotFoundError(
            f"{root}: no image pairs found (a folder with A/B, time1/time2 or im1/im2, or split folders holding them)"
        )
    return folders


def tag_targets(root: str | Path, tag: str, overwrite: bool = False) -> list[tuple[Path, Path]]:
    """``(date folder, tag file)`` for every date folder under ``root``, checked before CLIP is loaded.

    Raises:
        OutputError: a tag file exists and not ``overwrite`` (``--overwrite``), or cannot be written.
    """
    from .safety import check_output

    pairs = [(f, f.parent / f"{f.name}_clipcls_{tag}.json") for f in find_date_folders(Path(root))]
    for _, target in pairs:
        check_output(target, overwrite=overwrite, what="tag file", kind="file")
    return pairs


def tag_dataset(
    root: str | Path, model: nn.Module, preprocess: Callable[[Any], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor], classes: Sequence[str], tag: str = "56_vit16",
    batch_size: int = 64, num_workers: int = 0, device: str | torch.device = "cpu", progress: bool = True,
    overwrite: bool = False,
) -> list[Path]:
    """Tag every image of every date folder under ``root``; returns the JSON files written (one per folder).

    Existing tag files are replaced only with ``overwrite``.
    """
    root = Path(root)
    written = []
    for folder, target in tag_targets(root, tag, overwrite):
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not paths:
            log.warning("%s: no images", folder)
            continue
        probs = class_probabilities(model, preprocess, tokenizer, paths, classes, batch_size, num_workers, device,
                                    progress, desc=str(folder.relative_to(root.parent)))
        entries = [ranked_entry(p.relative_to(root).as_posix(), pr, classes)
                   for p, pr in zip(paths, probs, strict=True)]
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(entries, indent=4, ensure_ascii=False), encoding="utf-8")
        log.info("wrote %s (%d images)", target, len(entries))
        written.append(target)
    return written


class TileTagger:
    """CLIP tags for every tile of a sliding-window prediction (the seed's ``mm_slide`` test mode).

    ChangeCLIP's prompts name each image's top-k CLIP classes. One set of tags for a whole scene (which CLIP sees
    shrunk to 224 px) describes few of its tiles, so, like the seed's ``clip_func.py``, this tags every tile of
    each date on its own. Tiles arrive normalised with the run's ``mean``/``std``; they are turned back into
    8-bit RGB and go through CLIP's own preprocessing, so a tile gets the tags ``changekit clip-tag`` would give
    the same pixels saved as an image. Pass an instance as ``tile_extras`` to
    :func:`~changekit.inference.sliding.sliding_window_predict` or
    :func:`~changekit.inference.scene.predict_scene`.
    """

    def __init__(self, model: nn.Module, preprocess: Callable[[Any], torch.Tensor],
                 tokenizer: Callable[[list[str]], torch.Tensor], classes: Sequence[str], top_k: int = 9,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 device: str | torch.device = "cpu") -> None:
        if not 1 <= top_k <= len(classes):
            raise ConfigError(f"top_k: must be between 1 and the {len(classes)} classes, got {top_k}")
        self.model, self.preprocess, self.classes, self.top_k = model, preprocess, list(classes), int(top_k)
        self.device = torch.device(device)
        self.mean, self.std = list(mean), list(std)
        with torch.inference_mode():
            self.text = text_features(model, tokenizer, self.classes, self.device)

    @classmethod
    def for_run(cls, cfg: dict[str, Any], change_model: nn.Module, source: str | Path, clip_model: str = "ViT-B-16",
                clip_weights: str | Path | None = None, clip_classes: str | Path | None = None,
                device: str | torch.device = "cpu") -> TileTagger:
        """A tagger for the run ``cfg`` of ``change_model`` (from checkpoint ``source``): its ``data.tags.top_k``
        and normalisation (``data.mean`` / ``data.std``).

        Raises:
            ConfigError: the model takes no CLIP tags.
        """
        if "tags_a" not in getattr(change_model, "extra_inputs", ()):
            raise ConfigError(f"{source}: tile_tags: the model ({cfg['model'].get('name')}) takes no CLIP tags")
        model, preprocess, tokenizer = load_clip(clip_model, clip_weights, device)
        top_k = int((cfg["data"].get("tags") or {}).get("top_k", 9))
        return cls(model, preprocess, tokenizer, read_class_names(clip_classes), top_k, cfg["data"]["mean"],
                   cfg["data"]["std"], device)

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, list[str]]:
        """Forward keywords ``{"tags_a": [...], "tags_b": [...]}``, one tag string per tile of ``(B, C, t, t)``."""
        return {"tags_a": self.tags(a), "tags_b": self.tags(b)}

    def to_uint8(self, tiles: torch.Tensor) -> np.ndarray:
        """Undo the run's normalisation: ``(B, C, t, t)`` -> ``(B, t, t, C)`` uint8."""
        c = tiles.shape[1]
        mean = torch.tensor((self.mean * c)[:c], device=tiles.device).view(1, -1, 1, 1)
        std = torch.tensor((self.std * c)[:c], device=tiles.device).view(1, -1, 1, 1)
        x = (tiles.float() * std + mean).mul_(255.0).round_().clamp_(0, 255)
        return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    @torch.inference_mode()
    def tags(self, tiles: torch.Tensor) -> list[str]:
        """The ``top_k`` most probable class names of each tile, joined as the tag files are read."""
        from .data.tags import TAG_SEPARATOR

        images = torch.stack([self.preprocess(to_pil_rgb(t)) for t in self.to_uint8(tiles)]).to(self.device)
        probs = image_probabilities(self.model, images, self.text).numpy()
        order = np.argsort(-probs, axis=1, kind="stable")[:, : self.top_k]  # ties keep class order, as ranked_entry
        return [TAG_SEPARATOR.join(self.classes[i] for i in row) for row in order]
