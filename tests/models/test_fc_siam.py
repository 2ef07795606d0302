"""FC-EF / FC-Siam-conc / FC-Siam-diff: contract, parameter counts, architecture details, learning."""

from __future__ import annotations

import pytest
import torch

from changekit.errors import ConfigError
from changekit.losses import build_loss
from changekit.models import build_model, count_parameters
from changekit.models.fc_siam import FCEF, FCSiam

from .base import BaseModelTester, train_losses


class TestFCEF(BaseModelTester):
    model_name = "fc_ef"


class TestFCSiamConc(BaseModelTester):
    model_name = "fc_siam_conc"


class TestFCSiamDiff(BaseModelTester):
    model_name = "fc_siam_diff"


class TestFCSiamDiffSigmoid(BaseModelTester):
    model_name = "fc_siam_diff"
    model_kwargs = {"num_classes": 1}
    change_channels = 1


# Exact counts at the defaults; published (Daudt et al. 2018): 1.35 M, 1.55 M, 1.35 M.
EXPECTED = {"fc_ef": 1_350_578, "fc_siam_conc": 1_545_986, "fc_siam_diff": 1_350_146}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts(name: str) -> None:
    assert count_parameters(build_model(name)) == EXPECTED[name]


def test_parameter_counts_follow_the_architecture() -> None:
    """Differences derived by hand: FC-EF's first conv sees 3 more bands (3*16*9 weights); FC-Siam-conc's first
    decoder conv of each level sees one more skip of the level's width w (w*w*9 weights, w = 16..128)."""
    assert EXPECTED["fc_ef"] - EXPECTED["fc_siam_diff"] == 3 * 16 * 9
    assert EXPECTED["fc_siam_conc"] - EXPECTED["fc_siam_diff"] == sum(w * w * 9 for w in (16, 32, 64, 128))
    for name, published in (("fc_ef", 1.35), ("fc_siam_conc", 1.55), ("fc_siam_diff", 1.35)):
        assert abs(EXPECTED[name] / 1e6 - published) < 0.01


def test_layer_layout() -> None:
    model = build_model("fc_siam_diff")
    assert isinstance(model, FCSiam)
    enc_convs = [len(stage) for stage in model.encoder.stages]
    dec_convs = [len(stage) for stage in model.decoder.stages]
    assert enc_convs == [2, 2, 3, 3] and dec_convs == [3, 3, 2, 2]
    widths = [stage[0].conv.out_channels for stage in model.encoder.stages]
    assert widths == [16, 32, 64, 128]
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert len(drops) == 19 and set(drops) == {0.2}  # every conv but the last
    assert len(list(build_model("fc_siam_diff", dropout=0).modules())) < len(list(model.modules()))
    assert count_parameters(build_model("fc_ef", base_channels=8)) < EXPECTED["fc_ef"] / 3


@pytest.mark.parametrize("name", ["fc_siam_diff", "fc_siam_conc"])
def test_decoder_inputs_follow_the_paper(name: str) -> None:
    """The decoder gets |skip_a - skip_b| (diff) or [skip_a, skip_b] (conc) per level, and, as in the original
    code, the pooled bottom of date B."""
    model = build_model(name).eval()
    enc: list = []
    dec: list = []
    h1 = model.encoder.register_forward_hook(lambda m, args, out: enc.append(out))
    h2 = model.decoder.register_forward_pre_hook(lambda m, args: dec.append(args))
    a, b = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(a, b)
    h1.remove()
    h2.remove()
    (bottom, skips), (dec_bottom, dec_skips) = enc[0], dec[0]
    assert torch.equal(dec_bottom, bottom[2:])
    for s, fused in zip(skips, dec_skips, strict=True):
        expected = (s[:2] - s[2:]).abs() if name == "fc_siam_diff" else torch.cat([s[:2], s[2:]], 1)
        assert torch.equal(fused, expected)
    assert all(float(f.abs().max()) > 0 for f in dec_skips)


def test_eval_bn_folding_matches_unfolded_math() -> None:
    """The eval-mode conv+BN fold must equal conv -> BN -> ReLU computed the textbook way."""
    block = build_model("fc_ef").encoder.stages[0][0]
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
        block.bn.weight.uniform_(0.5, 2)
        block.bn.bias.uniform_(-1, 1)
    block.eval()
    x = torch.randn(2, 6, 16, 16)
    with torch.no_grad():
        expected = torch.relu(block.bn(block.conv(x)))
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_ef_stacks_dates_along_channels() -> None:
    model = build_model("fc_ef", in_channels=4)
    assert isinstance(model, FCEF)
    assert model.encoder.stages[0][0].conv.in_channels == 8


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"num_classes": 3}, "num_classes"), ({"dropout": 1.5}, "dropout"), ({"base_channels": 0}, "base_channels"),
     ({"fusion": "sum"}, "fusion"), ({"in_channels": "3"}, "in_channels")],
)
def test_bad_arguments(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model("fc_siam_diff", **kwargs)


def _synthetic_pairs(n: int = 4, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random textures; date B = date A plus a bright square; the label is the square."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 3, size, size, generator=gen)
    b = a.clone()
    mask = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):  # one square per sample
        s = int(torch.randint(6, 13, (1,), generator=gen))
        y, x = (int(v) for v in torch.randint(0, size - s, (2,), generator=gen))
        b[i, :, y : y + s, x : x + s] += 2.0
        mask[i, y : y + s, x : x + s] = 1
    return a, b, mask


def test_loss_falls_on_synthetic_squares() -> None:
    torch.manual_seed(0)
    a, b, mask = _synthetic_pairs()
    model = build_model("fc_siam_diff")
    loss_fn = build_loss([{"name": "ce"}])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = train_losses(lambda: loss_fn(model(a, b), {"mask": mask})[0], opt, 30)
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    model.eval()
    with torch.no_grad():
        pred = model(a, b).change.argmax(1)
    iou = ((pred == 1) & (mask == 1)).sum() / ((pred == 1) | (mask == 1)).sum()
    assert float(iou) > 0.5
