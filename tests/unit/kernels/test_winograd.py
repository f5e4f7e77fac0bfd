"""Winograd 3x3 convolutions against ``F.conv2d``, the algorithm choice, and the text-tower cut.

Float32 error at the paper's shape (batch 8 of the 64, (32, 16) grid, 256 <-> 1024 channels,
forward and both gradients, max |error| / max |float64 reference|): F(4x4, 3x3) 4e-6 .. 9e-6,
F(2x2, 3x3) ~5e-7, oneDNN's direct convolution ~2e-6 on the same arrays.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from reference import conv3x3_nhwc, winograd_conv3x3
from torch.utils.flop_counter import FlopCounterMode

from anomalyclip.backbone import build_clip, load_text
from anomalyclip.kernels import native
from anomalyclip.kernels.winograd import transform_weight
from anomalyclip.kernels.winograd_ffn import winograd_feedforward
from anomalyclip.model import AnomalyCLIP, ModelConfig
from anomalyclip.model.temporal import WINOGRAD_MIN_CHANNELS, ConvFeedForward, TemporalModel

SHAPES = [(2, 32, 16, 5, 7), (3, 6, 4, 4, 3), (2, 5, 7, 3, 6), (1, 1, 1, 2, 2), (2, 9, 3, 3, 3)]


def direct(x, w, b):
    return F.conv2d(x.permute(0, 3, 1, 2), w, b, padding=1).permute(0, 2, 3, 1)


def operands(B, H, W, C, Fo, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, H, W, C, generator=gen, dtype=dtype, requires_grad=True)
    w = (torch.randn(Fo, C, 3, 3, generator=gen, dtype=dtype) / (3 * C**0.5)).requires_grad_()
    b = torch.randn(Fo, generator=gen, dtype=dtype, requires_grad=True)
    return x, w, b


def rel_err(got, ref):
    got, ref = got.detach().double(), ref.detach().double()
    return float((got - ref).abs().max() / ref.abs().max())


@pytest.fixture(params=["native", "eager"])
def transforms_impl(request, monkeypatch):
    """Run a test with the compiled tile transforms and again with the eager torch ones."""
    if request.param == "eager":
        monkeypatch.setattr(native, "supports", lambda t: False)
    elif native.kernels() is None:
        pytest.skip("no C compiler: the compiled transforms are not built here")
    return request.param


def test_compiled_transforms_are_built_where_a_compiler_exists():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    assert native.kernels() is not None
    x = torch.randn(1, 4, 4, 3)
    assert native.supports(x) and native.supports(x.double()) and not native.supports(x.half())


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fn", [conv3x3_nhwc, winograd_conv3x3])
def test_float64_forward_and_gradients_equal_conv2d(fn, shape, m, transforms_impl):
    x, w, b = operands(*shape)
    ref = direct(x, w, b)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (x, w, b), g)
    got = fn(x, w, b, m)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-11, rtol=0)
    for got_g, ref_g in zip(torch.autograd.grad(got, (x, w, b), g), ref_grads, strict=True):
        assert torch.allclose(got_g, ref_g, atol=1e-11, rtol=0)


def test_without_bias_and_blocking_over_images(monkeypatch):
    import anomalyclip.kernels.winograd as wg

    monkeypatch.setattr(wg, "CHUNK_BYTES", 1)  # one image per block: the blocked path
    x, w, _ = operands(5, 8, 4, 3, 4)
    ref = direct(x, w, None)
    g = torch.randn_like(ref)
    got = winograd_conv3x3(x, w, None, 4)
    assert torch.allclose(got, ref, atol=1e-11, rtol=0)
    for got_g, ref_g in zip(
        torch.autograd.grad(got, (x, w), g), torch.autograd.grad(ref, (x, w), g), strict=True
    ):
        assert torch.allclose(got_g, ref_g, atol=1e-11, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("m, tol", [(2, 3e-6), (4, 3e-5)])
def test_float32_error_at_paper_channels(m, tol):
    """Paper channels and grid, one video: the float32 error stays near float32 rounding."""
    for C, Fo in [(256, 1024), (1024, 256)]:
        x, w, b = operands(1, 32, 16, C, Fo)
        ref = direct(x, w, b)
        g = torch.randn_like(ref)
        ref_gx, ref_gw = torch.autograd.grad(ref, (x, w), g)
        xf, wf = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
        got = winograd_conv3x3(xf, wf, b.detach().float(), m)
        gx, gw = torch.autograd.grad(got, (xf, wf), g.float())
        errors = [rel_err(got, ref), rel_err(gx, ref_gx), rel_err(gw, ref_gw)]
        assert max(errors) < tol, errors
        assert max(errors) > 1e-9  # really computed in float32


def test_weight_transform_of_a_delta_filter():
    """A centre-tap filter is the identity convolution; its transform is G[:,1] G[:,1]^T."""
    w = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    w[0, 0, 1, 1] = 1
    u = transform_weight(w, 2).view(4, 4)
    g1 = torch.tensor([0.0, 0.5, -0.5, 0.0], dtype=torch.float64)
    assert torch.allclose(u, torch.outer(g1, g1))
    x = torch.randn(2, 5, 6, 1, dtype=torch.float64)
    assert torch.allclose(conv3x3_nhwc(x, w, None, 2), x, atol=1e-12)


def test_bad_tile_size():
    x, w, b = operands(1, 4, 4, 2, 2)
    with pytest.raises(ValueError, match="tile size"):
        winograd_conv3x3(x, w, b, 3)


# ---------------------------------------------------------------- the switch in the model


@pytest.mark.parametrize("shape", [(3, 6, 5, 8), (2, 8, 4, 70), (1, 1, 3, 5)])
def test_fused_feed_forward_equals_direct_convolutions(shape, transforms_impl):
    """conv -> LeakyReLU -> conv, fused, against F.conv2d in float64: values and all gradients.

    70 channels: more than one 64-channel pass of the compiled kernels, the last one partial.
    """
    B, H, W, C = shape
    x, w1, b1 = operands(B, H, W, C, 4 * C, seed=1)
    _, w2, b2 = operands(B, H, W, 4 * C, C, seed=2)
    ref = direct(F.leaky_relu(direct(x, w1, b1), 0.01), w2, b2)
    got = winograd_feedforward(x, w1, b1, w2, b2, 0.01, 4)
    assert torch.allclose(got, ref, atol=1e-11, rtol=0)
    g = torch.randn_like(ref)
    args = (x, w1, b1, w2, b2)
    for a, b in zip(
        torch.autograd.grad(got, args, g), torch.autograd.grad(ref, args, g), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


@pytest.mark.slow
def test_float32_error_of_the_fused_feed_forward_at_paper_width(transforms_impl):
    """Paper widths in float32: within the float32 tolerance of F(4x4, 3x3) of the float64
    direct convolutions, forward and every gradient, for both transform implementations."""
    x, w1, b1 = operands(2, 32, 16, 256, 1024)
    _, w2, b2 = operands(2, 32, 16, 1024, 256, seed=1)
    args = (x, w1, b1, w2, b2)
    ref = direct(F.leaky_relu(direct(x, w1, b1), 0.01), w2, b2)
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, args, g)
    args32 = [a.detach().float().requires_grad_() for a in args]
    got = winograd_feedforward(*args32, 0.01, 4)
    assert rel_err(got, ref) < 3e-5
    for a, b in zip(torch.autograd.grad(got, args32, g.float()), ref_grads, strict=True):
        assert rel_err(a, b) < 3e-5


def test_feed_forward_same_under_both_algorithms_and_same_state_dict(transforms_impl):
    torch.manual_seed(0)
    ff = {conv: ConvFeedForward(8, conv=conv, tile=4).double() for conv in ("direct", "winograd")}
    with torch.no_grad():  # non-trivial norm parameters
        ff["direct"].net[0].g.normal_()
        ff["direct"].net[0].b.normal_()
    state = ff["direct"].state_dict()
    ff["winograd"].load_state_dict(state)  # the algorithm is no part of the state dict
    assert list(ff["winograd"].state_dict()) == list(state)
    x = torch.randn(3, 6, 5, 8, dtype=torch.float64, requires_grad=True)
    results = {}
    for algorithm, module in ff.items():
        y = module(x)
        grads = torch.autograd.grad(y.square().sum(), [x, *module.parameters()])
        results[algorithm] = (y, grads)
    (yd, gd), (yw, gw) = results["direct"], results["winograd"]
    assert torch.allclose(yw, yd, atol=1e-11, rtol=0)
    for a, b in zip(gw, gd, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_blocked_feed_forward_reuses_two_winograd_buffers(transforms_impl, monkeypatch):
    """Blocks of one image (five blocks), the norm included: every value and gradient equals
    the direct modules' in float64, so no block reads a buffer another value still needs;
    and the backward's Winograd-domain values take turns in the forward's two buffers ("v"
    and "m"), so the workspace holds two of them besides the hidden gradient (it held
    four)."""
    import anomalyclip.kernels.winograd as wg

    monkeypatch.setattr(wg, "CHUNK_BYTES", 1)
    wg.release_workspace()
    torch.manual_seed(0)
    ff = {conv: ConvFeedForward(6, conv=conv, tile=4).double() for conv in ("direct", "winograd")}
    with torch.no_grad():
        ff["direct"].net[0].g.normal_()
        ff["direct"].net[0].b.normal_()
    ff["winograd"].load_state_dict(ff["direct"].state_dict())
    x = torch.randn(5, 7, 6, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 7, 6, 6, dtype=torch.float64)
    results = {}
    for algorithm, module in ff.items():
        y = module(x)
        results[algorithm] = (y, torch.autograd.grad(y, [x, *module.parameters()], g))
    (yd, gd), (yw, gw) = results["direct"], results["winograd"]
    assert torch.allclose(yw, yd, atol=1e-11, rtol=0)
    for a, b in zip(gw, gd, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)
    if transforms_impl == "native":  # the eager transforms allocate their own
        tiles = 2 * 2  # (7, 6) grid in 4 x 4 output tiles
        winograd_domain = 36 * tiles * 24 * 8  # one image's (r*r, t, 4E) in float64
        hidden_grad = 7 * 6 * 24 * 8
        held = {name: buf.nbytes for (name, *_), buf in wg._WORKSPACE.buffers.items()}
        assert held == {"v": winograd_domain, "m": winograd_domain, "gh": hidden_grad}
    wg.release_workspace()


def _conv_flops(ff: ConvFeedForward, x: torch.Tensor, autocast: bool = False) -> dict:
    cast = torch.autocast("cpu", torch.bfloat16, enabled=autocast)
    with FlopCounterMode(display=False) as counter, cast:
        ff(x)
    return {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}


def test_auto_picks_winograd_in_fp32_and_direct_under_autocast_or_when_narrow():
    ff = ConvFeedForward(WINOGRAD_MIN_CHANNELS, conv="auto")
    x = torch.randn(1, 4, 4, WINOGRAD_MIN_CHANNELS)
    narrow = ConvFeedForward(WINOGRAD_MIN_CHANNELS // 2, conv="auto")
    fp32 = _conv_flops(ff, x)
    bf16 = _conv_flops(ff, x, autocast=True)
    narrow_fp32 = _conv_flops(narrow, x[..., : WINOGRAD_MIN_CHANNELS // 2])
    direct_fp32 = _conv_flops(ConvFeedForward(WINOGRAD_MIN_CHANNELS, conv="direct"), x)
    assert "aten.convolution" in direct_fp32 and "aten.convolution" in bf16
    assert "aten.convolution" in narrow_fp32
    assert "aten.convolution" not in fp32 and "aten.bmm" in fp32
    # 36 multiplies per 4x4 tile instead of 144: a quarter of the convolution's FLOPs
    assert fp32["aten.bmm"] == direct_fp32["aten.convolution"] // 4


def test_choice_is_per_model_validated_and_reaches_every_feed_forward():
    """The algorithm is a constructor argument: two models in one process each keep their own
    (no process-wide state), it reaches every feed-forward of every layer, and bad choices
    are refused when the model is built."""
    args = (6, 8, 2, 2, 4, 3)  # in_dim, E, depth 2, heads, N, L
    wino, direct = TemporalModel(*args, conv="winograd"), TemporalModel(*args)
    ffs = [m for m in wino.modules() if isinstance(m, ConvFeedForward)]
    assert len(ffs) == 4 and all(m.algorithm == "winograd" for m in ffs)
    assert all(m.algorithm == "direct" for m in direct.modules() if isinstance(m, ConvFeedForward))
    assert "conv='winograd'" in repr(wino)
    assert ConvFeedForward(8, conv="winograd", tile=2).tile == 2
    with pytest.raises(ValueError, match="conv algorithm"):
        TemporalModel(*args, conv="fft")
    with pytest.raises(ValueError, match="tile"):
        ConvFeedForward(8, conv="winograd", tile=6)


# ---------------------------------------------------------------- the text tower cut


def test_text_tower_cut_at_last_eos_gives_the_same_features(tmp_path):
    text_model, tokenizer = load_text(build_clip(tmp_path / "clip", "tiny"))
    classes = ("Abuse", "Car_accident", "Normal", "Riot", "throwing object")
    model = AnomalyCLIP(ModelConfig(classes=classes, normal_id=2), text_model, tokenizer)
    pl = model.prompt_learner
    assert pl.seq_len == int(pl.eos_position.max()) + 1 < pl.input_ids.shape[1]
    seq_len = pl.seq_len
    for dtype, tol in [(torch.float64, 1e-12), (torch.float32, 1e-6)]:
        model.to(dtype)
        with torch.no_grad():
            pl.ctx.normal_()
            pl.seq_len = seq_len
            cut = pl()
            pl.seq_len = pl.input_ids.shape[1]  # the whole 77-token sequence
            full = pl()
        assert rel_err(cut, full) < tol  # float32: only the attention's summation order differs
        assert cut.abs().max() > 0.1


@pytest.mark.parametrize(("offset", "scale"), [(0.0, 1.0), (40.0, 0.05)])
def test_two_pass_channel_moments_match_float64(offset, scale):
    """The feed-forward norm's per-pixel mean and std (two passes over the channels): the
    mean within a few float32 steps of its magnitude, the std within 1e-5 of the spread, also
    for pixels whose mean is far from zero relative to their spread (the features are
    centred on the normal centroid, not per pixel)."""
    from anomalyclip.kernels.winograd import _moments

    x = torch.randn(3, 8, 5, 256, generator=torch.Generator().manual_seed(0)) * scale + offset
    mean, std = _moments(x)
    ref = x.double()
    ulp = torch.finfo(torch.float32).eps * (offset + 4 * scale)
    assert (mean.double() - ref.mean(-1, keepdim=True)).abs().max() <= 4 * ulp
    ref_std = ref.std(-1, correction=0, keepdim=True)
    assert (std.double() - ref_std).abs().max() <= 1e-5 * scale
