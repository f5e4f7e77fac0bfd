"""The fast inference path against the reference path.

Fast path: what ``anomaly eval`` / ``predict`` run, a model built with ``conv="auto"``
(Winograd F(4x4, 3x3) for float32 CPU tensors of >= 128 channels, the blocked inference form
with its filters transformed once), text features computed once per model, and the batched
arrangement of :func:`anomalyclip.model.inference.score_videos`. Reference path: the same
weights with direct convolutions in float64, the text tower run for every sequence, and the
test-time arrangement written out here from its definition (:func:`reference.sequence_index`),
one sequence at a time.

The model is E = 128 (the smallest width at which ``auto`` takes Winograd, so the fast path
is the one real runs take), depth 1, 32 x 16 grids, 512-d features, with BatchNorm running
statistics and a centroid taken from the features, as after training. The features are
random unit-norm vectors plus a shared offset and a per-video drift, so p(A) spreads over
(0, 1) instead of saturating (a saturated sigmoid would hide errors in the logits).

Tolerances (max |difference| over every frame of p(A) and of the class probabilities):
float32 fast path vs float64 reference 1e-5 (measured ~3e-7: Winograd's float32 rounding,
below what the published-checkpoint parity holds to); float64 fast path vs float64
reference 1e-12 (measured ~1e-15: the fast path is exact arithmetic).
"""

from __future__ import annotations

import math

import pytest
import torch
from reference import sequence_index

from anomalyclip.backbone import load_text
from anomalyclip.datasets import get_dataset
from anomalyclip.model import AnomalyCLIP, ModelConfig
from anomalyclip.model.inference import score_video, score_videos
from anomalyclip.model.temporal import ConvFeedForward

N, L, D = 32, 16, 512
LENGTHS = [1, 511, 512, 513, 10000]


def _features(T: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D, generator=gen)
    x = x / x.norm(dim=-1, keepdim=True)
    offset = torch.randn(D, generator=torch.Generator().manual_seed(99)) * 0.05
    drift = torch.linspace(0, 1, T).unsqueeze(-1) * torch.randn(D, generator=gen) * 0.05
    return x + offset + drift


def _copy(model: AnomalyCLIP, clip, conv: str = "auto") -> AnomalyCLIP:
    """A model with ``model``'s weights and the convolution algorithm ``conv``, in eval mode."""
    other = AnomalyCLIP(model.cfg, *load_text(clip), conv=conv)
    other.load_state_dict(model.state_dict())
    return other.eval()


@pytest.fixture(scope="module")
def models(tiny_clip):
    """The fast (auto, float32) and reference (direct, float64) models, same weights."""
    spec = get_dataset("ucf")
    cfg = ModelConfig(spec.classes, spec.normal_id, D, emb_dim=128, heads=4)
    torch.manual_seed(0)
    fast = AnomalyCLIP(cfg, *load_text(tiny_clip), conv="auto")
    train_x = torch.stack([_features(N * L, 1000 + i).view(N, L, D) for i in range(8)])
    fast.set_centroid(train_x.mean((0, 1, 2)))
    with torch.no_grad():
        fast.prompt_learner.ctx.normal_(std=0.2)  # learned-looking contexts
        bn = fast.selector_model.bn_layer
        bn.train()
        bn.momentum = None  # running statistics = those of the training frames, as trained
        text = fast.prompt_learner()[[c for c in range(14) if c != cfg.normal_id]]
        fast.selector_model(train_x - fast.centroid, text, fast.centroid)
        bn.momentum = 0.1
    fast.eval()
    return fast, _copy(fast, tiny_clip, "direct").double()


def _reference_scores(model: AnomalyCLIP, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sequence on its own, the text tower run each time; frames scored at their first
    (real) slot of the wrapped video."""
    T = x.shape[0]
    idx = sequence_index(T, N, L)  # (S, N, L) frame of every slot
    p, probs = torch.empty(T, dtype=torch.float64), None
    S = idx.shape[0]
    with torch.no_grad():
        for j in range(S):
            out = model(x[idx[j]].double().unsqueeze(0), model.prompt_learner())
            probs = out.probs.new_empty(T, out.probs.shape[-1]) if probs is None else probs
            for n in range(N):  # slot (j, n, l) is padded position (n * S + j) * L + l
                pos = (n * S + j) * L + torch.arange(L)
                real = pos < T
                p[pos[real]] = out.p_abnormal[0, n, real]
                probs[pos[real]] = out.probs[0, n, real]
    return p, probs


def _score(model: AnomalyCLIP):
    def fn(x):
        out = model(x)
        return out.p_abnormal, out.probs

    return fn


@pytest.fixture(scope="module")
def reference_outputs(models):
    _, reference = models
    return {T: _reference_scores(reference, _features(T, T)) for T in LENGTHS}


@pytest.mark.slow
@pytest.mark.parametrize("T", LENGTHS)
def test_fast_path_equals_reference_path(T, models, reference_outputs):
    fast, _ = models
    ref_p, ref_probs = reference_outputs[T]
    p, probs = score_video(_features(T, T), _score(fast), N, L, batch_size=8)
    assert p.dtype == torch.float32 and p.shape == (T,) and probs.shape == (T, 14)
    assert (p.double() - ref_p).abs().max() < 1e-5
    assert (probs.double() - ref_probs).abs().max() < 1e-5
    if T > 1:  # the comparison can fail: the scores spread and are not saturated
        assert ref_p.std() > 0.02 and 0.02 < ref_p.mean() < 0.98
    assert (probs.sum(-1) - 1).abs().max() < 1e-5


@pytest.mark.slow
def test_fast_path_in_float64_is_exact(models, reference_outputs, tiny_clip):
    """Same computation in float64: Winograd and the caches add no error of their own."""
    wino = _copy(models[0], tiny_clip, "winograd").double()
    videos = [_features(T, T).double() for T in (513, 10000)]
    p_all, probs_all = score_videos(videos, _score(wino), N, L, batch_size=7)
    for T, p, probs in zip((513, 10000), p_all, probs_all, strict=True):
        ref_p, ref_probs = reference_outputs[T]
        assert (p - ref_p).abs().max() < 1e-12
        assert (probs - ref_probs).abs().max() < 1e-12


@pytest.mark.slow
def test_batched_scoring_of_many_videos_equals_the_reference(models, reference_outputs):
    """All five videos in shared batches (several videos per batch, a video across batches)."""
    fast, _ = models
    videos = [_features(T, T) for T in LENGTHS]
    p_all, probs_all = score_videos(videos, _score(fast), N, L, batch_size=3)
    for T, p, probs in zip(LENGTHS, p_all, probs_all, strict=True):
        ref_p, ref_probs = reference_outputs[T]
        assert (p.double() - ref_p).abs().max() < 1e-5
        assert (probs.double() - ref_probs).abs().max() < 1e-5


def test_scoring_gathers_exactly_the_arrangement():
    """Every slot of every sequence the model sees holds the frame the arrangement puts there,
    with videos packed into batches in order."""
    lengths = [1, 700, 512, 30, 1025]
    videos = [torch.stack([torch.full((T,), float(v)), torch.arange(T).float()], -1)
              for v, T in enumerate(lengths)]  # fmt: skip
    seen = []

    def fn(x):
        seen.append(x.clone())
        return x[..., 1], x[..., :1].expand(*x.shape[:3], 3)

    score_videos(videos, fn, N, L, batch_size=3)
    assert [len(x) for x in seen] == [3, 3, 2]  # 1 + 2 + 1 + 1 + 3 sequences
    got = torch.cat(seen)
    expected = torch.cat([sequence_index(T, N, L) for T in lengths])
    owner = torch.cat([torch.full((math.ceil(T / (N * L)),), v) for v, T in enumerate(lengths)])
    assert torch.equal(got[..., 1].long(), expected)
    assert torch.equal(got[..., 0].long(), owner.view(-1, 1, 1).expand(-1, N, L))


# ---------------------------------------------------------------- what is computed once


def _counting(model: AnomalyCLIP) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    model.prompt_learner.register_forward_hook(hook)
    return calls


def test_text_features_are_computed_once_for_inference(models, tiny_clip):
    model = _copy(models[0], tiny_clip)
    calls = _counting(model)
    x = _features(N * L * 2, 5).view(2, N, L, D)
    with torch.inference_mode():
        first = model(x)
        second = model(x)
    with torch.no_grad():
        model(x)
    assert calls[0] == 1
    assert torch.equal(first.probs, second.probs)
    with torch.no_grad():  # and they equal a fresh computation
        assert torch.equal(model.text_features(), model.prompt_learner())


@pytest.mark.slow
def test_text_features_are_never_stale(models, tiny_clip):
    fast, _ = models
    model = _copy(fast, tiny_clip)
    calls = _counting(model)

    def cached():
        with torch.no_grad():
            return model.text_features()

    def fresh():
        with torch.no_grad():
            return model.prompt_learner()

    before = cached()
    # an optimiser step (the trainer's AdamW) on the learned contexts
    model.prompt_learner.ctx.grad = torch.randn_like(model.prompt_learner.ctx)
    torch.optim.AdamW([model.prompt_learner.ctx], lr=0.1).step()
    after_step = cached()
    assert not torch.allclose(after_step, before) and torch.equal(after_step, fresh())
    # load_state_dict of other weights, then of the original ones again
    state = {k: v.clone() for k, v in fast.state_dict().items()}
    state["prompt_learner.text_encoder.text_projection.weight"] *= 2
    model.load_state_dict(state)
    assert torch.equal(cached(), fresh()) and not torch.allclose(cached(), before)
    model.load_state_dict(fast.state_dict())
    assert torch.equal(cached(), before)
    # a plain in-place write to a frozen weight of the text tower
    with torch.no_grad():
        model.prompt_learner.text_encoder.text_model.final_layer_norm.bias.add_(0.5)
    assert torch.equal(cached(), fresh()) and not torch.allclose(cached(), before)
    # a cast, and autocast (its bfloat16 tower is another computation)
    model.double()
    assert cached().dtype == torch.float64
    model.float()
    with torch.autocast("cpu", torch.bfloat16):
        assert cached().dtype == torch.bfloat16
    assert cached().dtype == torch.float32
    # training: the cache is dropped, and with autograd on the features are differentiable
    n = calls[0]
    model.train()
    assert model._text.value is None
    model.text_features().sum().backward()
    model.text_features()
    assert calls[0] == n + 2 and model.prompt_learner.ctx.grad is not None


def test_winograd_filters_are_transformed_once_and_follow_the_weights():
    torch.manual_seed(0)
    ff = {c: ConvFeedForward(128, conv=c).double().eval() for c in ("winograd", "direct")}
    ff["direct"].load_state_dict(ff["winograd"].state_dict())
    x = torch.randn(2, 8, 4, 128, dtype=torch.float64)
    with torch.no_grad():
        y = ff["winograd"](x)
        u = ff["winograd"]._filters.value
        assert u is not None and torch.equal(ff["winograd"](x), y)
        assert ff["winograd"]._filters.value is u  # the same tensors, not transformed again
        assert (y - ff["direct"](x)).abs().max() < 1e-10
    for module in ff.values():  # the same optimiser step on both
        module.train()
        module(x).square().sum().backward()
        torch.optim.AdamW(module.parameters(), lr=0.05).step()
        module.eval()
    assert ff["winograd"]._filters.value is None  # dropped when it trained
    with torch.no_grad():
        y2 = ff["winograd"](x)
        assert (y2 - ff["direct"](x)).abs().max() < 1e-10 and (y2 - y).abs().max() > 1e-3
        ff["winograd"].net[1].weight.mul_(0.5)  # in place, outside any training step
        ff["direct"].net[1].weight.mul_(0.5)
        assert (ff["winograd"](x) - ff["direct"](x)).abs().max() < 1e-10


@pytest.mark.parametrize("block_bytes", [1, 64 << 20])  # one image per block; one block
def test_scratch_buffers_are_reused_and_leave_nothing_behind(block_bytes, monkeypatch):
    """Inference keeps its Winograd scratch buffers between calls (``Workspace``): a small
    batch scored right after a large one (buffers then hold the large batch's values, the
    padded borders included) must equal the same batch scored with fresh buffers, bit for
    bit; the buffers are not reallocated for a batch that fits; releasing them frees them."""
    from anomalyclip.kernels import winograd

    monkeypatch.setattr(winograd, "CHUNK_BYTES", block_bytes)
    torch.manual_seed(0)
    ff = ConvFeedForward(128, conv="winograd").eval()
    direct = ConvFeedForward(128, conv="direct").double().eval()
    direct.load_state_dict(ff.state_dict())
    large, small = torch.randn(6, 8, 4, 128) * 3 + 1, torch.randn(2, 8, 4, 128)
    winograd.release_workspace()
    with torch.no_grad():
        fresh = ff(small)
        assert (fresh.double() - direct(small.double())).abs().max() < 1e-5
        ff(large)
        buffers = {k: b.data_ptr() for k, b in winograd._WORKSPACE.buffers.items()}
        native = {"v"} if winograd.native.supports(small) else set()  # V from the C kernel
        assert {k[0] for k in buffers} == {"source", "hidden", "m"} | native
        again = ff(small)
        assert {k: b.data_ptr() for k, b in winograd._WORKSPACE.buffers.items()} == buffers
    assert torch.equal(again, fresh)
    winograd.release_workspace()
    assert not winograd._WORKSPACE.buffers
    with torch.no_grad():
        assert torch.equal(ff(small), fresh)
