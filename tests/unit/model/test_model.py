"""The AnomalyCLIP model against direct, loop-based computations of docs/model.md.

Every reference below is written from the specification with explicit Python loops over
videos, segments, frames, heads and kernel taps, in float64, and compared to 1e-6.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from anomalyclip.backbone import build_clip, load_text
from anomalyclip.model import AnomalyCLIP, LossWeights, ModelConfig
from anomalyclip.model.loss import anomalyclip_loss, segment_keep_mask, select_segments
from anomalyclip.model.prompt import prompt_text
from anomalyclip.model.selector import Selector
from anomalyclip.model.temporal import (
    AxialAttention,
    ChannelLayerNorm,
    ConvFeedForward,
    Coupling,
    TemporalModel,
)

XD = ("Abuse", "Car_accident", "Explosion", "Fighting", "Normal", "Riot", "Shooting")
SHT = (
    "car", "chasing", "circuit", "fall", "fighting", "hurdle", "jumping", "monocycle", "normal",
    "push", "robbery", "running", "skateboard", "step", "stoop", "throwing object", "vaudeville",
    "vehicle",
)  # fmt: skip
TOL = 1e-6


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_clip(tmp_path_factory.mktemp("clip"), "tiny")


def small_cfg(classes=XD, normal_id=4, **kw) -> ModelConfig:
    base = dict(emb_dim=16, heads=4, depth=1, num_segments=6, seg_length=4)
    return ModelConfig(classes=tuple(classes), normal_id=normal_id, **(base | kw))


def make_model(clip_dir, cfg: ModelConfig) -> AnomalyCLIP:
    text_model, tokenizer = load_text(clip_dir)
    return AnomalyCLIP(cfg, text_model, tokenizer)


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (LayerNorm gains, biases), so no term hides behind 1 or 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3 + (p.dim() == 1) * 0.5)


# ---------------------------------------------------------------- loop references


@torch.no_grad()
def ref_layer_norm(v, w, b, eps=1e-5):
    """nn.LayerNorm of one vector."""
    mean = sum(v) / len(v)
    var = sum((t - mean) ** 2 for t in v) / len(v)
    return torch.stack([(v[i] - mean) / math.sqrt(var + eps) * w[i] + b[i] for i in range(len(v))])


@torch.no_grad()
def ref_attention(attn: AxialAttention, x: torch.Tensor) -> torch.Tensor:
    """Pre-LN multi-head attention along attn.axis, one (video, line, head, query) at a time."""
    B, N, L, E = x.shape
    H = attn.heads
    dh = E // H
    Wq, Wkv = attn.to_q.weight, attn.to_kv.weight
    Wk, Wv = Wkv[:E], Wkv[E:]
    out = torch.zeros_like(x)
    for b in range(B):
        lines = range(L) if attn.axis == 1 else range(N)
        for o in lines:
            pos = [(t, o) for t in range(N)] if attn.axis == 1 else [(o, t) for t in range(L)]
            h = [ref_layer_norm(x[b, n, t], attn.norm.weight, attn.norm.bias) for n, t in pos]
            q, k, v = [Wq @ v_ for v_ in h], [Wk @ v_ for v_ in h], [Wv @ v_ for v_ in h]
            for i, (n, t) in enumerate(pos):
                heads = []
                for hh in range(H):
                    sl = slice(hh * dh, (hh + 1) * dh)
                    scores = [float(q[i][sl] @ k[j][sl]) / math.sqrt(dh) for j in range(len(pos))]
                    mx = max(scores)
                    e = [math.exp(s - mx) for s in scores]
                    z = sum(e)
                    heads.append(sum(e[j] / z * v[j][sl] for j in range(len(pos))))
                out[b, n, t] = attn.to_out.weight @ torch.cat(heads) + attn.to_out.bias
    return out


@torch.no_grad()
def ref_channel_layer_norm(ln: ChannelLayerNorm, x: torch.Tensor) -> torch.Tensor:
    """x: (B, E, H, W); per position (x - mean) / (std + eps) * g + b, biased variance."""
    out = torch.zeros_like(x)
    B, E, H, W = x.shape
    for b in range(B):
        for i in range(H):
            for j in range(W):
                v = x[b, :, i, j]
                mean = v.sum() / E
                std = math.sqrt(float(((v - mean) ** 2).sum()) / E)
                out[b, :, i, j] = (v - mean) / (std + 1e-5) * ln.g.view(-1) + ln.b.view(-1)
    return out


@torch.no_grad()
def ref_conv3x3(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Zero-padded 3x3 convolution, one output position and kernel tap at a time."""
    B, _, H, W = x.shape
    out = torch.zeros(B, conv.out_channels, H, W, dtype=x.dtype)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                acc = conv.bias.clone()
                for di in range(3):
                    for dj in range(3):
                        ii, jj = i + di - 1, j + dj - 1
                        if 0 <= ii < H and 0 <= jj < W:
                            acc = acc + conv.weight[:, :, di, dj] @ x[b, :, ii, jj]
                out[b, :, i, j] = acc
    return out


@torch.no_grad()
def ref_feed_forward(ff: ConvFeedForward, x: torch.Tensor) -> torch.Tensor:
    """x: (B, N, L, E) -> (B, N, L, E) through LN -> conv -> LeakyReLU(0.01) -> conv."""
    ln, c1, _, c2 = ff.net
    h = ref_channel_layer_norm(ln, x.permute(0, 3, 1, 2).contiguous())
    h = ref_conv3x3(c1, h)
    h = torch.where(h > 0, h, 0.01 * h)
    return ref_conv3x3(c2, h).permute(0, 2, 3, 1)


@torch.no_grad()
def ref_temporal(model: TemporalModel, x: torch.Tensor) -> torch.Tensor:
    B, N, L, _ = x.shape
    h = torch.zeros(B, N, L, model.projection.out_features, dtype=x.dtype)
    for b in range(B):
        for n in range(N):
            for t in range(L):
                h[b, n, t] = (
                    model.projection.weight @ x[b, n, t]
                    + model.projection.bias
                    + model.pos_emb_n[0, :, n, 0]
                    + model.pos_emb_l[0, :, 0, t]
                )
    a1, a2 = h, h
    for blk in model.blocks:
        ref = ref_attention if isinstance(blk.f, AxialAttention) else ref_feed_forward
        a1 = a1 + ref(blk.f, a2)
        a2 = a2 + ref(blk.g, a1)
    h = (a1 + a2) / 2
    head = model.classifier
    logits = torch.zeros(B, N, L, dtype=x.dtype)
    for b in range(B):
        for n in range(N):
            for t in range(L):
                v = ref_layer_norm(h[b, n, t], head.layer_norm.weight, head.layer_norm.bias)
                logits[b, n, t] = head.linear.weight[0] @ v + head.linear.bias[0]
    return logits


def ref_select(sim, labels, normal_id, keep, k):
    """Loop-based MIL selection: per video, rank its kept segments, dropped ones last."""
    B, N, L, A = sim.shape
    half = B // 2
    top, bottom = [], []
    for b in range(B):
        if b < half:
            c = int(labels[b]) - (int(labels[b]) > normal_id)
            score = [float(sum(sim[b, n, t, c] for t in range(L))) for n in range(N)]
        else:
            score = [
                float(sum(sim[b, n, t, a] for t in range(L) for a in range(A))) for n in range(N)
            ]
        hi = [score[n] if keep[b, n] else -1e6 for n in range(N)]
        top.append(sorted(range(N), key=lambda n: -hi[n])[:k])
        if b < half:
            lo = [score[n] if keep[b, n] else 1e6 for n in range(N)]
            bottom.append(sorted(range(N), key=lambda n: lo[n])[:k])
    return top, bottom


def ref_loss_terms(sim, logits, labels, normal_id, keep, k):
    """Every loss term of docs/model.md, unweighted, from explicit probabilities."""
    B, N, L, A = sim.shape
    half = B // 2
    top, bottom = ref_select(sim, labels, normal_id, keep, k)
    p = [
        [[1 / (1 + math.exp(-float(logits[b, n, t]))) for t in range(L)] for n in range(N)]
        for b in range(B)
    ]

    def prob(b, n, t, cls):  # C-way probability of class id cls
        if cls == normal_id:
            return 1 - p[b][n][t]
        a = cls - (cls > normal_id)
        e = [math.exp(float(sim[b, n, t, j])) for j in range(A)]
        return e[a] / sum(e) * p[b][n][t]

    dir_abn, nll_top_abn, nll_bot_abn, nll_top_nor = [], [], [], []
    for b in range(half):
        y = int(labels[b])
        a = y - (y > normal_id)
        for n in top[b]:
            for t in range(L):
                dir_abn.append(float(sim[b, n, t, a]))
                nll_top_abn.append(-math.log(prob(b, n, t, y)))
        for n in bottom[b]:
            for t in range(L):
                nll_bot_abn.append(-math.log(prob(b, n, t, normal_id)))
    dir_nor = [float(max(sim[b, n, t])) for b in range(half, B) for n in range(N) for t in range(L)]
    for b in range(half, B):
        for n in top[b]:
            for t in range(L):
                nll_top_nor.append(-math.log(prob(b, n, t, normal_id)))
    seq = [p[b][n][t] for b in range(half) for n in range(N) for t in range(L)]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {
        "dir_abnormal": -mean(dir_abn),
        "dir_normal": mean(dir_nor),
        "topk_abnormal": mean(nll_top_abn),
        "bottomk_abnormal": mean(nll_bot_abn),
        "topk_normal": mean(nll_top_nor),
        "smooth": sum((seq[i + 1] - seq[i]) ** 2 for i in range(len(seq) - 1)),
        "sparse": mean(seq),
    }


# ---------------------------------------------------------------- prompt learner


def test_prompt_text():
    assert prompt_text("Car_accident", 8) == "X X X X X X X X Car accident."
    assert prompt_text("throwing object", 2) == "X X throwing object."


def test_prompt_injection_equals_plain_clip_on_placeholder_embeddings(clip_dir):
    model = make_model(clip_dir, small_cfg()).double()
    pl = model.prompt_learner
    text_model, tokenizer = load_text(clip_dir)
    text_model = text_model.double().eval()
    ids = tokenizer(
        [prompt_text(c, 8) for c in XD], padding="max_length", max_length=77, return_tensors="pt"
    )["input_ids"]
    assert torch.equal(pl.input_ids, ids)
    with torch.no_grad():
        expected = text_model(input_ids=ids).text_embeds  # (C, D)
        x_id = int(ids[0, 1])
        x_emb = text_model.text_model.embeddings.token_embedding.weight[x_id]
        pl.ctx.copy_(x_emb.expand_as(pl.ctx))
        got = pl()
        assert got.shape == (len(XD), 512)
        assert torch.allclose(got, expected, atol=TOL, rtol=0)
        # the contexts are really used: different contexts, different features, per class
        # (a random change: a constant shift over channels would vanish in CLIP's LayerNorms)
        pl.ctx[2].add_(torch.randn(pl.ctx[2].shape, dtype=torch.float64))
        moved = pl()
    assert not torch.allclose(moved[2], expected[2], atol=1e-3)
    assert torch.allclose(
        torch.cat([moved[:2], moved[3:]]), torch.cat([expected[:2], expected[3:]]), atol=TOL, rtol=0
    )
    # the hook is gone after the call: the shared token embedding is untouched
    with torch.no_grad():
        plain = model.prompt_learner.text_encoder(input_ids=ids).text_embeds
    assert torch.allclose(plain, expected, atol=TOL, rtol=0)


def test_ctx_init_is_small_normal(clip_dir):
    torch.manual_seed(0)
    ctx = make_model(clip_dir, small_cfg(classes=SHT, normal_id=8)).prompt_learner.ctx
    assert ctx.shape == (18, 8, 64)
    assert abs(ctx.std().item() - 0.02) < 0.002 and abs(ctx.mean().item()) < 0.002


# ---------------------------------------------------------------- selector


def test_selector_against_loops():
    g = torch.Generator().manual_seed(1)
    B, N, L, D, A = 2, 3, 2, 5, 3
    x = torch.randn(B, N, L, D, generator=g, dtype=torch.float64)
    text = torch.randn(A, D, generator=g, dtype=torch.float64)
    m = torch.randn(D, generator=g, dtype=torch.float64)
    sel = Selector(A).double()
    got = sel(x - m, text, m)

    raw = torch.zeros(B, N, L, A, dtype=torch.float64)
    for c in range(A):
        d = [float(text[c, i] - m[i]) for i in range(D)]
        norm = math.sqrt(sum(v * v for v in d))
        for b in range(B):
            for n in range(N):
                for t in range(L):
                    raw[b, n, t, c] = sum(
                        (float(x[b, n, t, i]) - float(m[i])) * d[i] / norm for i in range(D)
                    )
    frames = raw.reshape(-1, A)
    count = frames.shape[0]
    expected = torch.zeros_like(frames)
    means, variances = [], []
    for c in range(A):
        col = [float(v) for v in frames[:, c]]
        mu = sum(col) / count
        var = sum((v - mu) ** 2 for v in col) / count
        means.append(mu)
        variances.append(var)
        for i, v in enumerate(col):
            expected[i, c] = (v - mu) / math.sqrt(var + 1e-5)
    assert torch.allclose(got.reshape(-1, A), expected, atol=TOL, rtol=0)

    # inference uses running statistics (momentum 0.1, unbiased variance for the update)
    sel.eval()
    got_eval = sel(x - m, text, m).reshape(-1, A)
    for c in range(A):
        rm = 0.1 * means[c]
        rv = 0.9 + 0.1 * variances[c] * count / (count - 1)
        want = (frames[:, c] - rm) / math.sqrt(rv + 1e-5)
        assert torch.allclose(got_eval[:, c], want, atol=TOL, rtol=0)


# ---------------------------------------------------------------- selection and loss


def loss_batch(seed=0, B=6, N=7, L=3, A=4):
    g = torch.Generator().manual_seed(seed)
    sim = torch.randn(B, N, L, A, generator=g, dtype=torch.float64)
    logits = torch.randn(B, N, L, generator=g, dtype=torch.float64) * 2
    normal_id = 2
    labels = torch.tensor([0, 4, 3] + [normal_id] * (B // 2))  # ids above Normal shift by one
    keep = torch.ones(B, N, dtype=torch.bool)
    keep[0, [1, 4]] = False
    keep[1, :4] = False  # exactly 3 kept: the top-3 and bottom-3 must be those three
    keep[3, [0, 2, 5]] = False
    keep[5, 6] = False
    return sim, logits, labels, normal_id, keep


def test_select_segments_against_loops():
    sim, _, labels, normal_id, keep = loss_batch()
    k = 3
    sel = select_segments(sim.sum(2), labels, normal_id, keep, k)
    top, bottom = ref_select(sim, labels, normal_id, keep, k)
    assert sel.top.shape == (6, k) and sel.bottom.shape == (3, k)
    assert sel.top.tolist() == top
    assert sel.bottom.tolist() == bottom
    assert sorted(sel.top[1].tolist()) == [4, 5, 6] == sorted(sel.bottom[1].tolist())
    for b in range(6):  # no dropped segment is ever picked while enough are kept
        assert keep[b, sel.top[b]].all()
    # the normal half ranks by the sum over every class, not by one class
    seg = sim.sum(2)
    for b in range(3, 6):
        total = torch.where(keep[b], seg[b].sum(-1), -1e6)
        assert set(sel.top[b].tolist()) == set(total.topk(k).indices.tolist())


def test_every_loss_term_against_loops():
    sim, logits, labels, normal_id, keep = loss_batch()
    weights = LossWeights(2.0, 3.0, 0.5, 0.25, 1.5, 8e-4, 8e-3)
    total, terms = anomalyclip_loss(sim, logits, labels, normal_id, keep, 3, weights)
    expected = ref_loss_terms(sim, logits, labels, normal_id, keep, 3)
    assert set(terms) == set(expected)
    for name, value in expected.items():
        w = getattr(weights, name)
        assert abs(terms[name].item() - w * value) < TOL, name
    assert abs(total.item() - sum(getattr(weights, n) * v for n, v in expected.items())) < TOL


def test_loss_is_finite_on_saturated_scores():
    sim, logits, labels, normal_id, keep = loss_batch()
    for value in (math.inf, -math.inf, 1e4, -1e4):
        total, terms = anomalyclip_loss(
            sim, torch.full_like(logits, value), labels, normal_id, keep, 3
        )
        assert torch.isfinite(total) and all(torch.isfinite(t) for t in terms.values())
    # saturated in opposite directions at once: the clamped NLL terms hit their cap of 100
    z = torch.where(torch.arange(6).view(-1, 1, 1) < 3, -1e4, 1e4) * torch.ones_like(logits)
    z.requires_grad_(True)
    s = sim.clone().requires_grad_(True)
    total, terms = anomalyclip_loss(s, z, labels, normal_id, keep, 3)
    assert terms["topk_abnormal"].item() == pytest.approx(100.0)
    assert terms["topk_normal"].item() == pytest.approx(100.0)
    total.backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(s.grad).all()


def test_segment_keep_mask_rate_and_determinism():
    a = segment_keep_mask(64, 32, 0.7, torch.Generator().manual_seed(3))
    b = segment_keep_mask(64, 32, 0.7, torch.Generator().manual_seed(3))
    c = segment_keep_mask(64, 32, 0.7, torch.Generator().manual_seed(4))
    assert a.dtype == torch.bool and a.shape == (64, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(a.float().mean().item() - 0.3) < 0.03  # 2048 draws: ~3 standard deviations


# ---------------------------------------------------------------- temporal model


def test_attention_coupling_against_loops():
    torch.manual_seed(0)
    x1 = torch.randn(2, 4, 3, 8, dtype=torch.float64)
    x2 = torch.randn(2, 4, 3, 8, dtype=torch.float64)
    block = Coupling(AxialAttention(8, 2, axis=1), AxialAttention(8, 2, axis=2)).double()
    randomise(block)
    for attn in (block.f, block.g):
        assert torch.allclose(attn(x1), ref_attention(attn, x1), atol=TOL, rtol=0)
    a1, a2 = block(x1, x2)
    r1 = x1 + ref_attention(block.f, x2)
    r2 = x2 + ref_attention(block.g, r1)
    assert torch.allclose(a1, r1, atol=TOL, rtol=0) and torch.allclose(a2, r2, atol=TOL, rtol=0)


def test_channel_layer_norm_and_conv_coupling_against_loops():
    torch.manual_seed(0)
    ln = ChannelLayerNorm(5).double()
    randomise(ln)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64) * 3 + 1
    assert torch.allclose(ln(x), ref_channel_layer_norm(ln, x), atol=TOL, rtol=0)
    # eps sits on the standard deviation: on a near-constant input it is not nn.LayerNorm's
    flat = (
        torch.full((1, 5, 1, 1), 2.0, dtype=torch.float64) + torch.arange(5).view(1, 5, 1, 1) * 1e-3
    )
    assert torch.allclose(ln(flat), ref_channel_layer_norm(ln, flat), atol=TOL, rtol=0)

    block = Coupling(ConvFeedForward(4), ConvFeedForward(4)).double()
    randomise(block, seed=1)
    x1 = torch.randn(2, 4, 3, 4, dtype=torch.float64)  # (B, N, L, E)
    x2 = torch.randn(2, 4, 3, 4, dtype=torch.float64)
    a1, a2 = block(x1, x2)
    r1 = x1 + ref_feed_forward(block.f, x2)
    r2 = x2 + ref_feed_forward(block.g, r1)
    assert torch.allclose(a1, r1, atol=TOL, rtol=0) and torch.allclose(a2, r2, atol=TOL, rtol=0)


def test_temporal_model_against_loops():
    torch.manual_seed(0)
    model = TemporalModel(in_dim=6, emb_dim=8, depth=2, heads=2, num_segments=4, seg_length=3)
    model = model.double()
    randomise(model, seed=2)
    x = torch.randn(2, 4, 3, 6, dtype=torch.float64)
    got = model(x)
    assert got.shape == (2, 4, 3)
    assert torch.allclose(got, ref_temporal(model, x), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(2, 3, 4, 6, dtype=torch.float64))


def test_temporal_parameter_layout():
    model = TemporalModel(in_dim=529, emb_dim=16, depth=2, heads=8, num_segments=32, seg_length=16)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["projection.weight"] == (16, 529)
    assert shapes["pos_emb_n"] == (1, 16, 32, 1) and shapes["pos_emb_l"] == (1, 16, 1, 16)
    assert shapes["blocks.2.g.to_kv.weight"] == (32, 16)
    assert "blocks.2.f.to_q.bias" not in shapes and "blocks.2.f.to_out.bias" in shapes
    assert shapes["blocks.3.f.net.0.g"] == (1, 16, 1, 1)
    assert shapes["blocks.3.g.net.1.weight"] == (64, 16, 3, 3)
    assert shapes["blocks.3.g.net.3.weight"] == (16, 64, 3, 3)
    assert shapes["classifier.linear.weight"] == (1, 16)
    assert len(shapes) == 56  # the authors' ShanghaiTech temporal model has 56 keys too


# ---------------------------------------------------------------- the whole model


def test_forward_shapes_and_probabilities_xd(clip_dir):
    cfg = small_cfg()
    model = make_model(clip_dir, cfg)
    model.set_centroid(torch.randn(512))
    x = torch.randn(4, 6, 4, 512)
    out = model(x)
    assert out.similarity.shape == (4, 6, 4, 6)
    assert out.logits.shape == out.p_abnormal.shape == (4, 6, 4)
    assert out.probs.shape == (4, 6, 4, 7)
    assert torch.allclose(out.probs.sum(-1), torch.ones(4, 6, 4), atol=1e-6)
    assert torch.allclose(out.probs[..., 4], 1 - out.p_abnormal)
    assert torch.allclose(out.p_abnormal, torch.sigmoid(out.logits))
    abnormal = torch.cat([out.probs[..., :4], out.probs[..., 5:]], -1)
    assert torch.allclose(abnormal, out.similarity.softmax(-1) * out.p_abnormal[..., None])


def test_forward_concat_similarity_sht(clip_dir):
    cfg = small_cfg(classes=SHT, normal_id=8, concat_similarity=True, depth=2)
    model = make_model(clip_dir, cfg).double().eval()
    m = torch.randn(512, dtype=torch.float64)
    model.set_centroid(m)
    assert model.temporal_model.projection.in_features == 17 + 512
    seen = {}

    def record(module, args, output):
        seen["input"] = args[0]

    model.temporal_model.projection.register_forward_hook(record)
    x = torch.randn(2, 6, 4, 512, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
    assert out.probs.shape == (2, 6, 4, 18)
    assert torch.allclose(out.probs.sum(-1), torch.ones(2, 6, 4, dtype=torch.float64), atol=TOL)
    assert torch.allclose(seen["input"][..., :17], out.similarity)  # similarities first
    assert torch.allclose(seen["input"][..., 17:], x - m)  # then the centred frame
    assert torch.equal(model.centroid, m)


def test_only_trainable_groups_change_in_a_step(clip_dir):
    torch.manual_seed(0)
    cfg = small_cfg()
    model = make_model(clip_dir, cfg).train()
    model.set_centroid(torch.randn(512) * 0.1)
    assert not model.prompt_learner.text_encoder.training  # frozen CLIP stays in eval mode
    groups = model.trainable_parameters()
    assert set(groups) == {"prompt", "text_projection", "temporal"}
    trainable = {id(p) for ps in groups.values() for p in ps}
    names = {n for n, p in model.named_parameters() if id(p) in trainable}
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}
    assert names >= {"prompt_learner.ctx", "prompt_learner.text_encoder.text_projection.weight"}
    assert all(
        n.startswith("temporal_model.")
        for n in names
        - {"prompt_learner.ctx", "prompt_learner.text_encoder.text_projection.weight"}
    )

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([{"params": ps} for ps in groups.values()], lr=1e-3, weight_decay=0.2)
    out = model(torch.randn(4, 6, 4, 512))
    total, _ = model.loss(
        out, torch.tensor([0, 6, 4, 4]), generator=torch.Generator().manual_seed(0)
    )
    total.backward()
    opt.step()
    frozen = [n for n in before if n not in names]
    assert len(frozen) > 10
    for n, p in model.named_parameters():
        if n in names:
            assert not torch.equal(p, before[n]), n
        else:
            assert p.grad is None and torch.equal(p, before[n]), n


def test_config_round_trip_and_checks(clip_dir):
    cfg = small_cfg(
        classes=SHT, normal_id=8, concat_similarity=True, loss_weights=LossWeights(smooth=1e-3)
    )
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.num_classes == 18 and back.num_anomaly == 17
    assert back.temporal_in_dim == 529
    with pytest.raises(ValueError, match="normal_id"):
        ModelConfig(classes=XD, normal_id=7)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(classes=XD, normal_id=4, emb_dim=30, heads=8)
    with pytest.raises(ValueError, match="projects to 512"):
        make_model(clip_dir, small_cfg(feature_dim=768))
