"""ClearSCD: contract, exact parameter count, CVAPS wiring, SACL/BSCC maths against the released formulas,
per-date BatchNorm of the SACL projection head, import of the authors' released checkpoints."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import changekit.models.clearscd  # noqa: F401  (registers the model until models/__init__ imports it)
from changekit.cli import app, main
from changekit.engine.checkpoint import load_checkpoint
from changekit.errors import CheckpointError, ConfigError
from changekit.models import build_model, count_parameters
from changekit.models.clearscd import ClearSCD
from changekit.models.clearscd.losses import (
    MemoryQueues,
    bscc_loss,
    class_queries,
    global_sacl,
    local_sacl,
    sample_per_class,
)
from changekit.models.foreign import convert_foreign

from .base import BaseModelTester

SMALL = {"pyramid_channels": 32, "segmentation_channels": 32}


class TestClearSCD(BaseModelTester):
    model_name = "clearscd"
    model_kwargs = SMALL
    change_channels = 1
    unused_params = ("encoder._conv_head", "encoder._bn1")  # registered but unused, as in the released model


def test_parameter_count_is_exact() -> None:
    """seed-systems 1.3: encoder 4,007,548 + FPN 1,751,808 + seg 10,377 + CVAPS 2,350 + projection 8,416."""
    with torch.device("meta"):
        model = build_model("clearscd")
    assert count_parameters(model) == 5_780_499
    parts = {name: count_parameters(child) for name, child in model.named_children()}
    assert parts == {"encoder": 4_007_548, "decoder": 1_751_808, "head_seg": 10_377, "head_bcd": 2_350,
                     "proj_head": 8_416, "queues": 0}


def test_semantic_outputs_and_cvaps_input() -> None:
    torch.manual_seed(0)
    model = build_model("clearscd", **SMALL).eval()
    assert model.task == "semantic" and model.num_classes == 9
    seen: list[torch.Tensor] = []
    model.head_bcd.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(a, b)
    assert out.sem_a.shape == out.sem_b.shape == (1, 9, 64, 64) and out.aux == {}
    low_a = F.interpolate(out.sem_a, size=(16, 16), mode="nearest")  # align_corners=True keeps the corners
    assert torch.allclose(out.sem_a[..., 0, 0], low_a[..., 0, 0])
    # the CVAPS input is |logits_A - logits_B| at 1/4; its x4 upsampling equals |sem_a - sem_b| at the corners
    assert seen[0].shape == (1, 9, 16, 16)
    torch.testing.assert_close(seen[0][..., 0, 0], (out.sem_a - out.sem_b).abs()[..., 0, 0])
    soft = build_model("clearscd", cvaps_input="softmax", **SMALL).eval()
    soft.load_state_dict(model.state_dict())
    seen.clear()
    soft.head_bcd.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        out2 = soft(a, b)
    assert float(seen[0].max()) <= 1.0
    torch.testing.assert_close(out2.sem_a, out.sem_a)


@pytest.mark.parametrize("batched", [False, True])
def test_siamese_batch_switch_sets_batchnorm_statistics(batched: bool) -> None:
    """Released behaviour (default): one encoder pass per date in training, so date A's BatchNorm statistics
    (and logits) do not depend on date B; ``siamese_batch=True`` pools them over both dates."""
    torch.manual_seed(0)
    model = build_model("clearscd", siamese_batch=batched, decoder_dropout=0.0, sacl_local=False,
                        sacl_global=False, **SMALL).train()
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(1)  # same drop-connect draws in both calls
        first = model(a, b).sem_a
        torch.manual_seed(1)
        second = model(a, b * 3 + 1).sem_a
    assert torch.allclose(first, second, atol=1e-5) != batched


def test_encoder_weights_load_from_a_local_file(tmp_path: Any) -> None:
    torch.manual_seed(0)
    src = build_model("clearscd", **SMALL)
    path = tmp_path / "effb0.pth"
    torch.save({f"encoder.{k}": v for k, v in src.encoder.state_dict().items()}, path)
    torch.manual_seed(1)
    released = build_model("clearscd", **SMALL)  # default: no ImageNet weights, as released
    assert not torch.equal(released.encoder._conv_stem.weight, src.encoder._conv_stem.weight)
    loaded = build_model("clearscd", encoder_weights=str(path), **SMALL)
    for k, v in src.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[k], v), k
    with pytest.raises(ConfigError, match="does not exist"):
        build_model("clearscd", encoder_weights=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize(("kwargs", "key"), [({"cvaps_input": "probs"}, "cvaps_input"),
                                             ({"segmentation_channels": 48}, "segmentation_channels"),
                                             ({"queue_len": 100}, "queue_len"), ({"num_classes": 0}, "num_classes")])
def test_bad_arguments(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model("clearscd", **kwargs)


# ------------------------------------------------------------------ losses against the released formulas
def test_sample_per_class_limits_and_ignores() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3 + [9] * 5 + [255] * 2 + [2] * 7)
    idx, cls = sample_per_class(labels, 9, 4)
    assert torch.bincount(cls, minlength=9)[:3].tolist() == [4, 3, 4]
    assert torch.equal(labels[idx], cls)
    assert len(set(idx.tolist())) == len(idx)


def _naive_local(proj_a, proj_b, feat_a, feat_b, lab_a, lab_b, k=9, tau=0.1, weight=0.1):  # noqa: ANN001, ANN202
    """The released local_contrast with every pixel sampled: explicit (positives x (1 + negatives)) logits."""
    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)

    lab = torch.cat([lab_a.reshape(-1), lab_b.reshape(-1)])
    q = torch.cat([flat(proj_a), flat(proj_b)], 1)
    keys = F.normalize(torch.cat([flat(feat_a), flat(feat_b)], 1), dim=0)
    total, classes = 0.0, [c for c in range(k) if (lab == c).any()]
    for c in classes:
        anchor = F.normalize(q[:, lab == c].mean(1), dim=0)
        valid = lab < k
        pos = anchor @ keys[:, lab == c]
        neg = anchor @ keys[:, valid & (lab != c)]
        logits = torch.cat([pos[:, None], neg[None].repeat(len(pos), 1)], 1) / tau
        total = total + F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))
    return total * weight / len(classes)


def test_local_sacl_equals_released_infonce() -> None:
    gen = torch.Generator().manual_seed(0)
    shape = (2, 8, 6, 6)
    proj_a, proj_b, feat_a, feat_b = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(4))
    lab_a, lab_b = torch.randint(0, 10, (2, 6, 6), generator=gen), torch.randint(0, 10, (2, 6, 6), generator=gen)
    ours = local_sacl(proj_a, proj_b, feat_a, feat_b, lab_a, lab_b, 9, sample_num=10_000)
    torch.testing.assert_close(ours.double(), _naive_local(proj_a, proj_b, feat_a, feat_b, lab_a, lab_b))


def test_global_sacl_equals_released_cosine_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    c, d, length = 4, 8, 16
    queue = F.normalize(torch.randn(2, c, d, length, generator=gen), dim=2)
    q = F.normalize(torch.randn(3, d, generator=gen), dim=1)
    cls = torch.tensor([0, 2, 3])
    expected = 0.0
    for i, k in enumerate(cls.tolist()):
        pos = torch.cat([q[i] @ queue[0, k], q[i] @ queue[1, k]])
        neg = torch.cat([q[i] @ queue[t, j] for j in range(c) if j != k for t in (0, 1)])
        expected += ((1 - pos).mean() + (1 + neg).mean()) / 2
    torch.testing.assert_close(global_sacl(q, cls, queue), expected / (2 * 3))


def test_hard_queries_weight_badly_classified_pixels() -> None:
    proj = torch.zeros(1, 2, 1, 2)
    proj[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    proj[0, :, 0, 1] = torch.tensor([0.0, 1.0])
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 0, 0, 0] = 10.0  # pixel 0 is confidently class 0 -> weight ~0; pixel 1 is hard
    labels = torch.zeros(1, 1, 2, dtype=torch.long)
    q, cls = class_queries(proj, logits, labels, 3, hard=True)
    assert cls.tolist() == [0] and q[0, 1] > 0.99
    q2, _ = class_queries(proj, logits, labels, 3, hard=False)
    torch.testing.assert_close(q2[0], F.normalize(torch.tensor([1.0, 1.0]), dim=0))


def test_bscc_equals_released_formula() -> None:
    gen = torch.Generator().manual_seed(2)
    diff = torch.rand(2, 128, 4, 4, generator=gen) * 3
    p = torch.rand(2, 1, 4, 4, generator=gen)
    y = torch.round(p)
    n_u, n_c = ((1 - y) * (1 - p)).sum() + 1e-4, (y * p).sum() + 1e-4
    ref = (0.5 * torch.sum((1 - p) * (y == 0) * diff**2) / n_u
           + 0.5 * torch.sum(p * (y == 1) * torch.clamp(2.0 - diff, min=0) ** 2) / n_c) / 128
    torch.testing.assert_close(bscc_loss(diff, p), ref)


def test_queues_fill_are_buffers_and_global_term_starts_after_warmup(tmp_path: Any) -> None:
    torch.manual_seed(0)
    model: ClearSCD = build_model("clearscd", queue_len=8, enqueue_len=4, **SMALL).train()  # type: ignore[assignment]
    assert {"queues.queue", "queues.ptr"} <= set(model.state_dict())
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    sem_a = torch.zeros(2, 64, 64, dtype=torch.long)
    sem_a[:, :, 32:] = 1
    sem_b = torch.full((2, 64, 64), 9)  # ignored: date B pushes nothing
    sem_b[:, :32] = 2
    batch = {"sem_a": sem_a, "sem_b": sem_b}
    before = model.queues.queue.clone()
    model.current_epoch = 0
    terms = model.extra_losses(model(a, b), batch)
    assert set(terms) == {"sacl_local", "bscc"}  # warm-up: global SACL only fills the queues
    assert model.queues.ptr.tolist() == [[4, 4, 0, 0, 0, 0, 0, 0, 0], [0, 0, 4, 0, 0, 0, 0, 0, 0]]
    assert not torch.equal(model.queues.queue[0, 0, :, :4], before[0, 0, :, :4])
    assert torch.equal(model.queues.queue[0, 0, :, 4:], before[0, 0, :, 4:])
    torch.testing.assert_close(model.queues.queue[0, 0, :, :4].norm(dim=0), torch.ones(4))
    model.current_epoch = 1
    out = model(a, b)
    terms = model.extra_losses(out, batch)
    assert set(terms) == {"sacl_local", "sacl_global", "bscc"}
    assert model.queues.ptr[0, 0] == 0  # the 8-slot ring wrapped
    params = [p for p in model.parameters() if p.requires_grad]
    for name, value in terms.items():
        assert torch.isfinite(value), name
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), name
    torch.save(model.state_dict(), tmp_path / "w.pt")
    other = build_model("clearscd", queue_len=8, enqueue_len=4, **SMALL)
    other.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    assert torch.equal(other.queues.queue, model.queues.queue) and torch.equal(other.queues.ptr, model.queues.ptr)


def test_memory_queue_push_skips_rare_classes() -> None:
    q = MemoryQueues(3, dim=4, length=8, enqueue_len=4)
    feats = torch.randn(1, 4, 2, 4)
    labels = torch.tensor([[[0, 0, 0, 0], [1, 1, 1, 2]]])
    q.push(0, feats, labels)
    assert q.ptr[0].tolist() == [4, 0, 0] and q.filled[0].tolist() == [4, 0, 0]


def test_extra_losses_are_empty_in_eval_and_without_labels() -> None:
    model = build_model("clearscd", **SMALL)
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    out = model.train()(a, b)
    assert set(model.extra_losses(out, {})) == {"bscc"}
    with torch.no_grad():
        assert model.eval().extra_losses(model(a, b), {"sem_a": None}) == {}


def test_encoder_checkpointing_changes_nothing() -> None:
    """Same outputs, gradients and BatchNorm running statistics with and without activation checkpointing."""
    torch.manual_seed(0)
    plain: ClearSCD = build_model("clearscd", checkpoint_encoder=False, **SMALL).train()  # type: ignore[assignment]
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint_encoder = True
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    outs = []
    for model in (plain, ckpt):
        torch.manual_seed(5)  # same drop-connect draws
        out = model(a, b)
        (out.change.square().sum() + out.sem_a.square().sum()).backward()
        outs.append(out.change)
    torch.testing.assert_close(outs[0], outs[1])
    for (name, p1), p2 in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert (p1.grad is None) == (p2.grad is None), name
        if p1.grad is not None:
            torch.testing.assert_close(p1.grad, p2.grad, msg=name)
    for (name, b1), b2 in zip(plain.named_buffers(), ckpt.buffers(), strict=True):
        assert torch.equal(b1, b2), name


def test_cpu_inference_fast_path_computes_the_released_eval_forward() -> None:
    """Fused encoder (folded BN, fused SiLU), channels_last and whole-batch eval equal the plain smp path."""
    torch.manual_seed(0)
    model: ClearSCD = build_model("clearscd").eval()  # type: ignore[assignment]
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    a, b = torch.randn(3, 3, 96, 64), torch.randn(3, 3, 96, 64)
    with torch.inference_mode():
        fast = model(a, b)
        model.cpu_fused_encoder, model.cpu_channels_last, model.cpu_eval_chunk = False, False, 1
        ref = model(a, b)
    for name in ("change", "sem_a", "sem_b"):
        torch.testing.assert_close(getattr(fast, name), getattr(ref, name), atol=1e-4, rtol=1e-4)


def test_add_merge_equals_smps_merge_block() -> None:
    from segmentation_models_pytorch.decoders.fpn.decoder import MergeBlock

    from changekit.models.clearscd.model import AddMerge

    xs = [torch.randn(2, 8, 5, 5, requires_grad=True) for _ in range(4)]
    torch.testing.assert_close(AddMerge()(xs), MergeBlock("add")(xs))
    AddMerge()(xs).sum().backward()
    assert all(torch.equal(x.grad, torch.ones_like(x)) for x in xs)


# ------------------------------------------------------------------ per-date BatchNorm of the projection head
def _sacl_head_step(head: torch.nn.Module, fa: torch.Tensor, fb: torch.Tensor, seg_a: torch.Tensor,
                    seg_b: torch.Tensor, lab_a: torch.Tensor, lab_b: torch.Tensor, queue: torch.Tensor,
                    per_date: bool) -> None:
    """Reference: ClearSCD's SACL terms from fixed decoder features, with the projection head called per date
    (released) or once on both dates; backward into ``head``."""
    if per_date:
        pa, pb = head(fa), head(fb)
    else:
        pa, pb = head(torch.cat([fa, fb])).chunk(2)
    total = local_sacl(pa, pb, fa, fb, lab_a, lab_b, 9, sample_num=1024)
    for proj, seg, lab in ((pa, seg_a, lab_a), (pb, seg_b, lab_b)):
        total = total + global_sacl(*class_queries(proj, seg, lab, 9), queue)
    total.backward()


@pytest.mark.parametrize("siamese_batch", [False, True])
def test_projection_head_batchnorm_sees_each_date_as_released(siamese_batch: bool) -> None:
    """The released forward calls ``proj_head(seg_A)`` then ``proj_head(seg_B)``: its BatchNorm normalises each
    date with that date's statistics and updates its running statistics twice. After one training step the
    head's gradients and running statistics equal a reference that calls our head per date on the model's own
    decoder features, and differ from one that runs it once on both dates (``siamese_batch=True`` matches that
    one instead)."""
    torch.manual_seed(0)
    model: ClearSCD = build_model("clearscd", siamese_batch=siamese_batch, bscc=False,  # type: ignore[assignment]
                                  **SMALL).train()
    model.current_epoch = 1  # past the warm-up: both SACL terms
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 3, 64, 64, generator=gen), torch.randn(2, 3, 64, 64, generator=gen) * 2 + 1
    sem_a, sem_b = torch.randint(0, 10, (2, 2, 64, 64), generator=gen).unbind(1)
    calls: list[tuple[str, int]] = []
    for name, module in (("encoder", model.encoder._conv_stem), ("decoder", model.decoder),
                         ("proj_head", model.proj_head)):
        module.register_forward_hook(lambda m, args, out, name=name: calls.append((name, len(out))))
    pristine = copy.deepcopy(model.proj_head)
    queue = model.queues.queue.clone()  # the step pushes into the queues after computing the global term
    out = model(a, b)
    terms = model.extra_losses(out, {"sem_a": sem_a, "sem_b": sem_b})
    forward_calls = list(calls)  # (the checkpointed encoder runs again during backward)
    sum(terms.values()).backward()  # type: ignore[union-attr]
    if siamese_batch:
        assert forward_calls == [("encoder", 4), ("decoder", 4), ("proj_head", 4)]
    else:  # the released order and grouping
        assert forward_calls == [("encoder", 2), ("encoder", 2), ("decoder", 2), ("decoder", 2), ("proj_head", 2),
                         ("proj_head", 2)]
    fa, fb = out.aux["feat_a"].detach(), out.aux["feat_b"].detach()
    lab_a, lab_b = (F.interpolate(s[:, None].float(), size=(16, 16), mode="nearest")[:, 0].long()
                    for s in (sem_a, sem_b))
    refs = {}
    for per_date in (True, False):
        refs[per_date] = copy.deepcopy(pristine)
        _sacl_head_step(refs[per_date], fa, fb, out.aux["seg_low_a"].detach(), out.aux["seg_low_b"].detach(),
                        lab_a, lab_b, queue, per_date)
    same, other = refs[not siamese_batch], refs[siamese_batch]
    for (name, p), p_ref in zip(model.proj_head.named_parameters(), same.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, buf), b_ref in zip(model.proj_head.named_buffers(), same.buffers(), strict=True):
        torch.testing.assert_close(buf, b_ref, rtol=1e-5, atol=1e-6, msg=name)
    assert int(model.proj_head.proj[1].num_batches_tracked) == (1 if siamese_batch else 2)
    # the comparison tells the two groupings apart: the other grouping is far off
    g, g_other = model.proj_head.proj[0].weight.grad, other.proj[0].weight.grad
    assert float((g - g_other).norm() / g.norm()) > 0.01
    assert float((model.proj_head.proj[1].running_mean - other.proj[1].running_mean).abs().max()) > 1e-3


# ------------------------------------------------------------------ the authors' released checkpoint
KEYS = Path(__file__).resolve().parents[1] / "data" / "clearscd_keys.json"


def _released_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random checkpoint with the names, shapes and dtypes of the authors' model, saved as their main.py
    does (``{'state_dict': model.state_dict()}``)."""
    gen = torch.Generator().manual_seed(seed)
    keys = json.loads(KEYS.read_text())["keys"]
    state = {k: torch.randint(0, 512, shape, generator=gen) if dtype == "int64" else torch.randn(shape, generator=gen)
             for k, (shape, dtype) in keys.items()}
    torch.save({"state_dict": state}, path)
    return state


def test_released_checkpoint_converts_strictly(tmp_path: Path) -> None:
    src = tmp_path / "30_1.234_checkpoint.pth.tar"
    state = _released_checkpoint(src)
    model, cfg = convert_foreign("clearscd", src)
    assert isinstance(model, ClearSCD) and not model.training
    assert cfg["model"]["name"] == "clearscd" and cfg["data"]["task"] == "semantic" and cfg["data"]["ignore_index"] == 9
    own = model.state_dict()
    assert len(state) == 457 and len(own) == 424  # 18 queues + 18 pointers -> queue, ptr, filled
    for key, value in state.items():
        if key.startswith(("queue_", "ptr_")):
            continue
        assert torch.equal(own[key.replace("head_seg.0.", "head_seg.")], value.to(own[key.replace(
            "head_seg.0.", "head_seg.")].dtype)), key
    for t, date in enumerate("AB"):
        for c in range(9):
            assert torch.equal(own["queues.queue"][t, c], state[f"queue_{date}{c}"])
            assert int(own["queues.ptr"][t, c]) == int(state[f"ptr_{date}{c}"])
    assert torch.equal(own["queues.filled"], torch.full((2, 9), 512))
    out = tmp_path / "clearscd.ckpt"
    res = CliRunner().invoke(app, ["convert", "clearscd", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "clearscd" in res.output and "5,780,499 parameters" in res.output
    loaded, _ = load_checkpoint(out)
    assert torch.equal(loaded.state_dict()["queues.queue"], own["queues.queue"])


def test_another_models_checkpoint_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    src = tmp_path / "fc_siam_diff.pth"
    torch.save({"state_dict": build_model("fc_siam_diff").state_dict()}, src)
    with pytest.raises(CheckpointError, match=r"not a clearscd checkpoint .*missing .*unexpected") as err:
        convert_foreign("clearscd", src)
    assert "\n" not in str(err.value)
    capsys.readouterr()
    assert main(["convert", "clearscd", str(src), "--out", str(tmp_path / "x.ckpt")]) == 2
    err_out = capsys.readouterr().err
    assert err_out.startswith("error: ") and err_out.count("\n") == 1, err_out
    assert not (tmp_path / "x.ckpt").exists()
    # a released checkpoint with one queue missing is refused too (the set of queues is not complete)
    src2 = tmp_path / "partial.pth"
    state = _released_checkpoint(src2)
    del state["queue_B4"]
    torch.save({"state_dict": state}, src2)
    with pytest.raises(CheckpointError, match=r"missing \(queues\.filled"):
        convert_foreign("clearscd", src2)
