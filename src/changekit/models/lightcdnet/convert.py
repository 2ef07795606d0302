"""Import of open-cd LightCDNet checkpoints (``changekit convert opencd SRC --model lightcdnet[_s|_l]``).

open-cd keeps the backbone's units and attention modules in one flat ``backbone.stages`` list, the conv-BN pairs
of its ShuffleNet units as numbered ``nn.Sequential`` entries, and the necks and heads as mmcv ``ConvModule``s
(``.conv`` / ``.bn``); the mapping below renames them onto :class:`~.model.LightCDNet`'s named parts.
"""

from __future__ import annotations

import re

import torch

from ..foreign import register_converter
from .model import STAGE_REPEATS

# open-cd ShuffleBlock entries -> ours: branch1 = [dw conv, bn, pw conv, bn, relu],
# branch2 = [pw conv, bn, relu, dw conv, bn, pw conv, bn, relu]
_BRANCH = {
    "branch1": {"0": "shortcut.0.conv", "1": "shortcut.0.bn", "2": "shortcut.1.conv", "3": "shortcut.1.bn"},
    "branch2": {"0": "main.0.conv", "1": "main.0.bn", "3": "main.1.conv", "4": "main.1.bn", "5": "main.2.conv",
                "6": "main.2.bn"},
}
_FIXED = [  # (pattern, replacement) applied in order, first match wins
    (r"^backbone\.conv1\.0\.", "backbone.stem.conv."),
    (r"^backbone\.conv1\.1\.", "backbone.stem.norm."),
    (r"^backbone\.fusion_conv\.stages\.0\.0\.", "backbone.fusion.expand.conv."),
    (r"^backbone\.fusion_conv\.stages\.0\.1\.", "backbone.fusion.expand.bn."),
    (r"^backbone\.fusion_conv\.single_conv\.0\.", "backbone.fusion.reduce.conv."),
    (r"^backbone\.fusion_conv\.single_conv\.1\.", "backbone.fusion.reduce.bn."),
    (r"^backbone\.fusion_conv\.final_conv\.0\.", "backbone.fusion.merge.conv."),
    (r"^backbone\.fusion_conv\.final_conv\.1\.", "backbone.fusion.merge.bn."),
    (r"^backbone\.fusion_conv\.time_attn\.mlp\.0\.", "backbone.fusion.time_attn.squeeze."),
    (r"^backbone\.fusion_conv\.time_attn\.mlp\.1\.", "backbone.fusion.time_attn.bn."),
    (r"^backbone\.fusion_conv\.time_attn\.mlp\.3\.", "backbone.fusion.time_attn.excite."),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"neck.lateral.\1."),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.", r"neck.smooth.\1."),
    (r"^decode_head\.scale_heads\.(\d+)\.0\.", r"head.scales.\1."),
    (r"^decode_head\.conv_seg\.", "head.classifier."),
    (r"^auxiliary_head\.convs\.0\.", "aux_head.conv."),
    (r"^auxiliary_head\.conv_seg\.", "aux_head.classifier."),
]
_CCA = {"cca.query_conv": "query", "cca.key_conv": "key", "cca.value_conv": "value", "cca.gamma.scale": "gamma"}


def _stage_slots(repeats: tuple[int, ...] = STAGE_REPEATS) -> list[str]:
    """Our prefix for each entry of open-cd's flat ``backbone.stages`` list (units, then the stage's attention)."""
    slots = []
    for s, r in enumerate(repeats):
        slots += [f"backbone.stages.{s}.blocks.{j}" for j in range(r)] + [f"backbone.stages.{s}.attn"]
    return slots


def _rename(key: str, slots: list[str]) -> str:
    for pattern, repl in _FIXED:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    m = re.match(r"^backbone\.(fusion_conv\.stages|stages)\.(\d+)\.(.*)$", key)
    if not m:
        return key  # left as is: an unknown key is reported by the converter's key check
    where, idx, rest = m.group(1), int(m.group(2)), m.group(3)
    if where == "fusion_conv.stages":  # entry 0 is the expansion (above), 1.. the ShuffleNet units
        prefix = f"backbone.fusion.blocks.{idx - 1}"
    elif idx < len(slots):
        prefix = slots[idx]
    else:
        return key
    if prefix.endswith(".attn"):
        for old, new in _CCA.items():
            if rest.startswith(old):
                return f"{prefix}.{new}{rest[len(old):]}"
        return key
    b = re.match(r"^(branch[12])\.(\d+)\.(.*)$", rest)
    if b and b.group(2) in _BRANCH[b.group(1)]:
        return f"{prefix}.{_BRANCH[b.group(1)][b.group(2)]}.{b.group(3)}"
    return key


@register_converter("opencd", "lightcdnet_s")
@register_converter("opencd", "lightcdnet_l")
@register_converter("opencd", "lightcdnet")
def lightcdnet_from_opencd(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open-cd's ``LightCDNet`` + ``TinyFPN`` + ``DS_FPNHead`` + ``FCNHead`` (ChangeAnywhere's lightcdnet configs)."""
    slots = _stage_slots()
    return {_rename(k, slots): v for k, v in state.items()}
