"""Reading files a user points at without ever running code from them.

Every ``torch.load`` in changekit goes through this module:

* :func:`load_tensors` reads changekit's own files and plain state dicts with ``weights_only=True`` (tensors,
  containers and primitive types only).
* :func:`restricted_load` reads foreign pickles (the authors' whole pickled modules, mmengine checkpoints with
  their ``meta`` objects) with :class:`RestrictedUnpickler`: tensors, storages and plain containers are rebuilt;
  every other global becomes an inert :class:`Stub` that only records the state it is given, so nothing named by
  the file is imported or called.

Both turn every way a file can be bad (missing, empty, truncated, not a pickle, cyclic or endlessly nested, a
planted payload, a folder or a symbolic link loop in its place) into one :class:`~changekit.errors.CheckpointError`
line that names the file. ``.safetensors`` files (which cannot hold code) are read by :func:`load_tensors` too.
"""

from __future__ import annotations

import _compat_pickle
import collections
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

from .data.io import require_file
from .errors import CheckpointError

#: deeper nesting than this is no checkpoint (changekit's own files nest about 6 levels): it is refused before
#: code that walks the structure recurses without end
MAX_NESTING = 100

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
}

# what a damaged or hostile file makes torch / pickle raise; anything else is a bug and keeps its traceback
_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, TypeError, IndexError,
                KeyError, OSError, RecursionError, zipfile.BadZipFile, UnicodeDecodeError, MemoryError)


class Stub:
    """Stands in for any class or function of the pickle that is not known to be safe; records its state."""

    stub_name = "?"
    stub_args: tuple = ()  # also for objects rebuilt with ``__new__`` (NEWOBJ), which skip ``__init__``
    stub_state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.stub_args = args
        self.stub_state: Any = kwargs or None

    def __setstate__(self, state: Any) -> None:
        self.stub_state = state

    def __repr__(self) -> str:
        return f"<stub {self.stub_name}>"


def _stub_class(module: str, name: str) -> type:
    return type(name, (Stub,), {"stub_name": f"{module}.{name}", "__module__": "changekit.stub"})


class RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` returns only tensor-rebuilding helpers, storages, dtypes and plain containers; anything
    else becomes a :class:`Stub` class, so loading never imports or runs code named by the file."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        # protocol-2 pickles name Python 2 modules (``__builtin__.set``); map them as pickle itself would
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch":
            value = getattr(torch, name, None)
            if isinstance(value, torch.dtype):
                return value
            if name.endswith("Storage") and isinstance(value, type):
                return value
        if module == "torch.storage" and name == "UntypedStorage":
            return torch.UntypedStorage
        return _stub_class(module, name)


_PICKLE_MODULE = types.ModuleType("changekit_restricted_pickle")
_PICKLE_MODULE.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
_PICKLE_MODULE.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]


def _check_file(path: Path, what: str) -> None:
    require_file(path, what, error=CheckpointError)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: {what} is empty (0 bytes; a run killed while writing it?)")


def check_nesting(obj: Any, path: Path, what: str = "checkpoint", cycles: bool = True) -> None:
    """Refuse a loaded structure that refers to itself (``cycles``) or nests deeper than :data:`MAX_NESTING`.

    A pickle can rebuild a dict that contains itself, or lists nested a million deep, without recursion; the code
    that later walks it (config merging, ``deepcopy``, state-dict search) would then recurse until Python gives
    up. The walk here is iterative and visits each container once. ``cycles=False`` (foreign pickled modules,
    whose hooks may point back at their module) checks the depth only.

    Raises:
        CheckpointError: naming ``path``.
    """
    done: set[int] = set()
    on_path: set[int] = set()
    stack: list[tuple[Any, int, bool]] = [(obj, 0, False)]
    while stack:
        node, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(node))
            done.add(id(node))
            continue
        if isinstance(node, Stub):
            children: Any = (node.stub_args, node.stub_state)
        elif isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, (list, tuple, set, frozenset)):
            children = node
        else:
            continue
        if id(node) in on_path:
            if cycles:
                raise CheckpointError(f"{path}: not a usable {what} (it contains itself: a cyclic structure)")
            continue
        if id(node) in done:
            continue
        if depth > MAX_NESTING:
            raise CheckpointError(f"{path}: not a usable {what} (its containers nest more than {MAX_NESTING} "
                                  "levels deep)")
        on_path.add(id(node))
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "its objects nest without end (a cyclic or corrupt pickle)"
    if isinstance(exc, (EOFError, zipfile.BadZipFile)) or "central directory" in str(exc):
        return "the file is truncated or not a PyTorch file"
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
        # torch's message is a page long: keep the name of what it refused
        refused = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        detail = refused[0][:160] if refused else "a Python object other than tensors and containers"
        return f"it holds code or objects that are never loaded ({detail})"
    first = (str(exc).splitlines() or [exc.__class__.__name__])[0]
    return f"{exc.__class__.__name__}: {first[:160]}"


def load_tensors(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors naming the file.

    A ``.safetensors`` file is read with ``safetensors`` (a flat ``{name: tensor}`` dict).

    Raises:
        DatasetNotFoundError: the file does not exist.
        CheckpointError: empty, truncated, cyclic or endlessly nested, not a PyTorch file, or it holds anything
            but tensors and plain containers (a planted pickle is refused, never run).
    """
    path = Path(path)
    _check_file(path, what)
    if path.suffix.lower() == ".safetensors":
        return _load_safetensors(path, what)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except _READ_ERRORS as exc:
        raise CheckpointError(f"{path}: not a readable {what} ({_reason(exc)})") from None
    check_nesting(obj, path, what)
    return obj


def _load_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0]
        raise CheckpointError(f"{path}: not a readable safetensors {what} ({first[:160]})") from None


def restricted_load(path: str | Path, what: str = "checkpoint") -> Any:
    """Unpickle a foreign ``torch.save`` file with :class:`RestrictedUnpickler` (tensors land on the CPU).

    TorchScript archives (OpenAI's CLIP ``.pt`` files) are read the same way: their ``data.pkl`` through the
    restricted unpickler, never through ``torch.jit.load``.
    """
    path = Path(path)
    _check_file(path, what)
    try:
        if is_torchscript(path):
            return _torchscript_tensors(path)
        obj = torch.load(path, map_location="cpu", pickle_module=_PICKLE_MODULE, weights_only=False)
    except _READ_ERRORS as exc:
        raise CheckpointError(f"{path}: cannot read as a PyTorch {what} ({_reason(exc)})") from None
    check_nesting(obj, path, what, cycles=False)
    return obj


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``constants.pkl``); unreadable files are not."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") for n in zf.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The named tensors of a TorchScript archive, read with :class:`RestrictedUnpickler` (no code is run).

    A TorchScript ``data.pkl`` pickles the module tree as ``__torch__`` objects whose state is a dict of
    attributes; tensors are persistent ids pointing into ``data/``. The tree of stubs is walked into a flat
    ``{"a.b.weight": tensor}`` mapping like a state dict (parameters and buffers alike).
    """
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        root = names[0].split("/")[0]
        data_name = f"{root}/data.pkl"
        storages: dict[str, torch.UntypedStorage] = {}

        def persistent_load(pid: Any) -> Any:
            # ('storage', storage_type, key, location, numel)
            _, storage_type, key, _location, numel = pid
            if key not in storages:
                raw = zf.read(f"{root}/data/{key}")
                storages[key] = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else \
                    torch.UntypedStorage(0)
            dtype = storage_type.dtype if hasattr(storage_type, "dtype") else storage_type
            return torch.storage.TypedStorage(wrap_storage=storages[key], dtype=dtype, _internal=True)

        unpickler = RestrictedUnpickler(zf.open(data_name))
        unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
        tree = unpickler.load()
    check_nesting(tree, path, "TorchScript archive", cycles=False)
    out: dict[str, torch.Tensor] = {}

    def walk(obj: Any, prefix: str, ancestors: frozenset[int]) -> None:
        state = obj.stub_state if isinstance(obj, Stub) else obj
        if isinstance(state, dict) and id(obj) not in ancestors:
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    out[f"{prefix}{key}"] = value
                elif isinstance(value, (Stub, dict)) and not str(key).startswith("_"):
                    walk(value, f"{prefix}{key}.", ancestors | {id(obj)})

    walk(tree, "", frozenset())
    return out


def module_state_dict(obj: Any, prefix: str = "", _ancestors: frozenset[int] = frozenset()) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a pickled ``nn.Module`` tree of :class:`Stub` objects (parameters, persistent
    buffers, submodules), or of a plain mapping of tensors. A submodule that refers back to one of its parents is
    skipped (a cyclic pickle)."""
    out: dict[str, torch.Tensor] = {}
    if id(obj) in _ancestors:
        return out
    if isinstance(obj, Stub):
        state = obj.stub_state
        if isinstance(state, tuple) and state and isinstance(state[0], dict):
            state = state[0]
        if not isinstance(state, dict) or "_modules" not in state:
            return out
        skip = state.get("_non_persistent_buffers_set")
        skip = skip if isinstance(skip, set | frozenset | list | tuple) else ()
        for kind in ("_parameters", "_buffers"):
            for name, value in (state.get(kind) or {}).items():
                if isinstance(value, torch.Tensor) and name not in skip:
                    out[prefix + name] = value.detach()
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                out.update(module_state_dict(child, f"{prefix}{name}.", _ancestors | {id(obj)}))
        return out
    if isinstance(obj, dict):
        for name, value in obj.items():
            if isinstance(value, torch.Tensor):
                out[prefix + str(name)] = value.detach()
    return out


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Find the model weights in a loaded checkpoint of another framework.

    Accepts a pickled module, a pickled ``ema_pytorch.EMA`` (its ``ema_model`` weights are taken), a training
    checkpoint ``{"model" | "state_dict" | "model_ema" | "ema": ..., ...}`` (mmengine, Lightning, plain loops) or
    a plain state_dict; strips ``module.`` prefixes (DataParallel / DDP).
    """
    seen: set[int] = set()
    while isinstance(obj, dict) and id(obj) not in seen and not any(isinstance(v, torch.Tensor)
                                                                    for v in obj.values()):
        seen.add(id(obj))  # a dict that holds itself under "state_dict" ends the search instead of recursing
        key = next((k for k in ("model_ema", "ema", "model", "state_dict", "net", "params") if k in obj), None)
        if key is None:
            break
        obj = obj[key]
    state = module_state_dict(obj)
    if any(k.startswith("ema_model.") for k in state):
        state = {k[len("ema_model."):]: v for k, v in state.items() if k.startswith("ema_model.")}
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
