"""Import of the authors' released ClearSCD checkpoints: ``changekit convert clearscd SRC.pth --out DST.ckpt``.

The released ``main.py`` saves ``torch.save({'state_dict': model.state_dict()}, ...)`` every epoch
(``results/<dataset>/<config>_<n>/state/{epoch}_{metric}_checkpoint.pth.tar``): a plain dict around a state dict,
no pickled module. :func:`changekit.models.foreign.convert_foreign` reads it with the restricted unpickler and
unwraps ``state_dict``; :func:`map_released_keys` renames the keys, and the result is loaded strictly.

Key names (``tests/data/clearscd_keys.json`` lists all 457 with their shapes, taken from the authors' model):

* ``encoder.*`` (smp EfficientNet-b0), ``decoder.*`` (smp FPN), ``head_bcd.convs.*`` (CVAPS) and
  ``proj_head.proj.*`` are ours already;
* ``head_seg.0.*``: their smp ``SegmentationHead`` is ``Sequential(conv, upsampling, activation)``; ours is the
  conv alone (``head_seg.*``);
* ``queue_A{c}`` / ``queue_B{c}`` (``proj_dim x queue_len``, one buffer per class and date) and ``ptr_A{c}`` /
  ``ptr_B{c}`` (shape ``(1,)``) become ``queues.queue`` ``(2, C, proj_dim, queue_len)`` and ``queues.ptr``
  ``(2, C)``, date A first;
* ``queues.filled`` (how many slots changekit has pushed) has no counterpart: the authors keep no count. It is
  set to the queue length, since both codes compute the global SACL term over every slot anyway (initial random
  vectors included), so the value changes no loss; it only reports.
"""

from __future__ import annotations

import re

import torch

from ..foreign import register_converter

_QUEUE = re.compile(r"^(queue|ptr)_([AB])(\d+)$")


def _released_queues(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``queues.*`` from the 18 released buffers, or ``None`` when they are not a complete, consistent set."""
    found: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for key, value in state.items():
        m = _QUEUE.match(key)
        if m:
            found.setdefault((m[1], m[2]), {})[int(m[3])] = value
    classes = len(found.get(("queue", "A"), {}))
    wanted = set(range(classes))
    if classes == 0 or any(set(found.get((kind, date), {})) != wanted for kind in ("queue", "ptr") for date in "AB"):
        return None
    queues = [found[("queue", date)][c] for date in "AB" for c in range(classes)]
    ptrs = [found[("ptr", date)][c].reshape(-1) for date in "AB" for c in range(classes)]
    if len({tuple(q.shape) for q in queues}) != 1 or queues[0].ndim != 2 or any(p.numel() != 1 for p in ptrs):
        return None
    queue = torch.stack(queues).reshape(2, classes, *queues[0].shape).float()
    ptr = torch.cat(ptrs).reshape(2, classes).long()
    return {"queues.queue": queue, "queues.ptr": ptr,
            "queues.filled": torch.full((2, classes), queue.shape[-1], dtype=torch.long)}


@register_converter("clearscd", "clearscd", config={"data": {"task": "semantic", "ignore_index": 9}})
def map_released_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ClearSCD's released state dict (``tangkai-RS/ClearSCD`` ``main.py``) to changekit's ``clearscd``.

    Keys that are not ClearSCD's are passed through unchanged, so that loading a checkpoint of another model
    reports its missing and unexpected keys in one line instead of failing here.
    """
    queues = _released_queues(state)
    out = {}
    for key, value in state.items():
        if queues is not None and _QUEUE.match(key):
            continue
        out[re.sub(r"^head_seg\.0\.", "head_seg.", key)] = value
    if queues is not None:
        out.update(queues)
    return out
