"""Head parts checked against direct computations."""
import math

import torch

from rein_d2.modeling.head import MSDeformAttnPixelDecoder, ms_deform_attn_sample


def bilinear_zero_padded(img, x, y):
    """img [d, H, W]; (x, y) in [0, 1] image coordinates -> [d], zero outside."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=img.dtype)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wx * wy * img[:, yy, xx]
    return out


def test_deformable_sampling_equals_per_point_computation():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (2, 2)]
    b, heads, d, q, points = 2, 2, 3, 4, 3
    value = torch.randn(b, sum(h * w for h, w in shapes), heads, d, generator=g, dtype=torch.float64)
    # Locations partly outside [0, 1] to cover the zero padding.
    loc = torch.rand(b, q, heads, len(shapes), points, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(b, q, heads, len(shapes), points, generator=g, dtype=torch.float64)
    out = ms_deform_attn_sample(value, shapes, loc, weights)
    starts = [0, shapes[0][0] * shapes[0][1]]
    expected = torch.zeros(b, q, heads, d, dtype=torch.float64)
    for bi in range(b):
        for qi in range(q):
            for hi in range(heads):
                for li, (h, w) in enumerate(shapes):
                    img = value[bi, starts[li]:starts[li] + h * w, hi].t().reshape(d, h, w)
                    for pi in range(points):
                        x, y = loc[bi, qi, hi, li, pi].tolist()
                        expected[bi, qi, hi] += weights[bi, qi, hi, li, pi] * bilinear_zero_padded(img, x, y)
    torch.testing.assert_close(out, expected.reshape(b, q, heads * d), rtol=0, atol=1e-10)


def test_pixel_decoder_shapes_and_gradients():
    dec = MSDeformAttnPixelDecoder(in_channels=[16] * 4, strides=[4, 8, 16, 32], feat_channels=32,
                                   out_channels=32, num_layers=1, num_heads=4, ffn_dim=32)
    feats = [torch.randn(2, 16, 64 // s, 96 // s, requires_grad=True) for s in (4, 8, 16, 32)]
    mask_features, memories = dec(feats)
    assert mask_features.shape == (2, 32, 16, 24)
    assert [tuple(m.shape[-2:]) for m in memories] == [(2, 3), (4, 6), (8, 12)]
    (mask_features.sum() + sum(m.sum() for m in memories)).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_num_masks_is_averaged_over_processes_and_clamped(monkeypatch):
    """Under DDP the mask count is summed over processes and divided by their number (as the
    reference does), then clamped at 1; simulated here with a second process's count."""
    from rein_d2.modeling.head import SetCriterion

    dist = torch.distributed
    other = {"count": 0.0}
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda t: t.add_(other["count"]))
    criterion = SetCriterion(num_classes=3, num_points=16)
    one = [{"labels": torch.tensor([1]), "masks": torch.ones(1, 8, 8, dtype=torch.bool)}]
    assert criterion._num_masks(one, "cpu").item() == 1.0  # (1 + 0) / 2 = 0.5, clamped to 1
    other["count"] = 5.0
    assert criterion._num_masks(one, "cpu").item() == 3.0  # (1 + 5) / 2


def test_deformable_sampling_gradients():
    """Backward of the points-major sampling against finite differences (value, locations and
    weights), in float64 on a small case."""
    g = torch.Generator().manual_seed(1)
    shapes = [(3, 4), (2, 2)]
    b, heads, d, q, points = 1, 2, 2, 3, 2
    value = torch.randn(b, sum(h * w for h, w in shapes), heads, d, generator=g, dtype=torch.float64)
    loc = torch.rand(b, q, heads, len(shapes), points, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1
    weights = torch.rand(b, q, heads, len(shapes), points, generator=g, dtype=torch.float64)
    inputs = tuple(t.requires_grad_() for t in (value, loc, weights))
    assert torch.autograd.gradcheck(lambda v, l, w: ms_deform_attn_sample(v, shapes, l, w), inputs)


class _FakeKernel:
    """Stands in for the compiled CUDA op on CPU: the same calling convention (value, shapes
    [L, 2] long, level starts [L], locations, weights, im2col step), computed by the PyTorch
    path, so the dispatch and the autograd wiring are exercised without a GPU."""

    def __init__(self):
        self.calls = []

    def _shapes(self, value, sizes, starts):
        shapes = [tuple(s) for s in sizes.tolist()]
        assert sizes.dtype == torch.long and starts.tolist() == [0] + list(
            torch.tensor([h * w for h, w in shapes]).cumsum(0)[:-1].tolist())
        assert value.is_contiguous() and value.dtype == torch.float32
        return shapes

    def ms_deform_attn_forward(self, value, sizes, starts, loc, w, step):
        self.calls.append("forward")
        return ms_deform_attn_sample(value, self._shapes(value, sizes, starts), loc, w)

    def ms_deform_attn_backward(self, value, sizes, starts, loc, w, grad, step):
        self.calls.append("backward")
        inputs = [t.detach().requires_grad_() for t in (value, loc, w)]
        with torch.enable_grad():
            out = ms_deform_attn_sample(inputs[0], self._shapes(value, sizes, starts), inputs[1], inputs[2])
        return torch.autograd.grad(out, inputs, grad)


def test_cuda_kernel_path_is_wired_like_the_pytorch_path(monkeypatch):
    from rein_d2.modeling.head import ms_deform_attn as mod

    torch.manual_seed(0)
    attn = mod.MSDeformAttn(embed_dim=16, num_heads=2, num_levels=2, num_points=2)
    shapes = [(4, 6), (2, 3)]
    query = torch.randn(2, 30, 16, requires_grad=True)
    pos = torch.randn(2, 30, 16)
    refs = torch.rand(2, 30, 2)

    def run():
        out = attn(query, pos, refs, shapes)
        grads = torch.autograd.grad(out.square().sum(), [query] + list(attn.parameters()))
        return out, grads

    ref_out, ref_grads = run()
    fake = _FakeKernel()
    monkeypatch.setattr(mod, "cuda_kernel", lambda: fake)
    monkeypatch.setattr(mod, "use_kernel", lambda value: True)
    out, grads = run()
    assert fake.calls == ["forward", "backward"]
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_without_the_kernel_cuda_falls_back_to_pytorch():
    from rein_d2.modeling.head import ms_deform_attn as mod

    # this machine has no CUDA (and the op is not installed): the PyTorch path is selected
    assert not mod.use_kernel(torch.zeros(1))


def test_recomputed_sampling_gives_the_same_gradients_and_keeps_less():
    from rein_d2.modeling.head.ms_deform_attn import MSDeformAttn

    torch.manual_seed(0)
    plain = MSDeformAttn(embed_dim=16, num_heads=2, num_levels=2, num_points=2)
    recompute = MSDeformAttn(embed_dim=16, num_heads=2, num_levels=2, num_points=2, recompute_sampling=True)
    recompute.load_state_dict(plain.state_dict())
    shapes = [(8, 12), (4, 6)]
    query = torch.randn(2, 120, 16)
    pos, refs = torch.randn(2, 120, 16), torch.rand(2, 120, 2)
    results = []
    for attn in (plain, recompute):
        saved = []
        q = query.clone().requires_grad_()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            out = attn(q, pos, refs, shapes)
        grads = torch.autograd.grad(out.square().sum(), [q] + list(attn.parameters()))
        results.append((out, grads, sum(saved)))
    (a, ga, na), (b, gb, nb) = results
    torch.testing.assert_close(b, a, rtol=0, atol=0)
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    assert nb < 0.7 * na  # the per-level samples are not kept
