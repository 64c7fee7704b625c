"""VectorQuantizer / ResidualVQ options: codebook_dim (projected codes), l2_normalize (cosine codes), rotation_trick."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import vqaudio.ops
from vqaudio.errors import ConfigError
from vqaudio.ops.rotation import rotation_vjp
from vqaudio.quantize import ResidualVQ, VectorQuantizer


def rows_of(z: torch.Tensor) -> torch.Tensor:
    return z.transpose(1, 2).reshape(-1, z.shape[1])


def test_codebook_dim_projects_in_and_out():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 32, codebook_dim=4).eval()
    assert vq.codebook.shape == (32, 4)
    assert {"project_in.weight", "project_in.bias", "project_out.weight", "project_out.bias"} <= set(vq.state_dict())
    z = torch.randn(3, 16, 10)
    out = vq(z)
    x = vq.project_in(rows_of(z))  # [N, 4]
    expected = torch.cdist(x.double(), vq.codebook.double()).argmin(dim=1).view(3, 10)
    assert torch.equal(out.indices, expected) and torch.equal(vq.encode(z), expected)
    assert out.quantized.shape == (3, 16, 10)
    torch.testing.assert_close(out.quantized, vq.project_out(vq.codebook[expected]).transpose(1, 2))
    torch.testing.assert_close(vq.decode(expected), out.quantized)


def test_no_projection_without_codebook_dim_or_when_equal():
    assert VectorQuantizer(8, 16).project_in is None
    assert VectorQuantizer(8, 16, codebook_dim=8).project_in is None
    assert set(VectorQuantizer(8, 16).state_dict()) == {"codebook", "embed_sum", "cluster_size", "step", "initialized", "seed"}


@pytest.mark.parametrize("ema", [True, False])
def test_codebook_dim_trains_both_projections(ema):
    torch.manual_seed(1)
    vq = VectorQuantizer(12, 16, codebook_dim=3, ema=ema).train()
    z = torch.randn(2, 12, 30, requires_grad=True)
    out = vq(z)
    (out.quantized.square().mean() + out.loss).backward()
    for p in (vq.project_in.weight, vq.project_out.weight, z):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert (vq.codebook.grad is not None) == (not ema)


@pytest.mark.parametrize("ema", [True, False])
def test_l2_normalize_looks_up_by_cosine_similarity(ema):
    torch.manual_seed(2)
    vq = VectorQuantizer(6, 40, l2_normalize=True, ema=ema).eval()
    torch.testing.assert_close(vq.codebook.detach().norm(dim=1), torch.ones(40))  # initialised on the sphere
    if not ema:  # a parameter of any norm is normalised where used: cosine and Euclidean lookups disagree
        with torch.no_grad():
            vq.codebook.mul_(torch.rand(40, 1) * 10 + 0.1)
    z = torch.randn(4, 6, 25) * 3
    cos = F.normalize(rows_of(z), dim=1) @ F.normalize(vq.codebook.detach(), dim=1).T
    expected = cos.argmax(dim=1).view(4, 25)
    out = vq(z)
    assert torch.equal(out.indices, expected) and torch.equal(vq.encode(z), expected)
    euclidean = torch.cdist(rows_of(z), vq.codebook.detach()).argmin(dim=1).view(4, 25)
    assert ema or not torch.equal(euclidean, expected)
    unit = F.normalize(vq.codebook.detach(), dim=1)[expected].transpose(1, 2)
    torch.testing.assert_close(out.quantized, unit)
    torch.testing.assert_close(vq.decode(expected), unit)


def test_l2_normalize_ema_codes_stay_on_the_sphere():
    torch.manual_seed(3)
    vq = VectorQuantizer(5, 24, l2_normalize=True, kmeans_init=True, dead_threshold=2.0).train()
    assert torch.allclose(vq.codebook.norm(dim=1), torch.ones(24))
    restarted = 0
    for step in range(6):
        vq(torch.randn(3, 5, 20) * (step + 1) + 2.0)
        torch.testing.assert_close(vq.codebook.norm(dim=1), torch.ones(24))
        restarted += int((vq.cluster_size == 2.0).sum())
    assert restarted > 0


def test_l2_normalize_ema_code_is_the_normalised_mean_direction_and_unused_codes_keep_theirs():
    vq = VectorQuantizer(2, 3, l2_normalize=True, dead_threshold=0.0).train()
    vq.codebook.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    z = torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, -0.1]]).T[None]  # codes 0, 1, 0
    out = vq(z)
    assert out.indices.tolist() == [[0, 1, 0]]
    x = F.normalize(z[0].T, dim=1)
    torch.testing.assert_close(vq.codebook[0], F.normalize(x[0] + x[2], dim=0))
    torch.testing.assert_close(vq.codebook[1], x[1])
    assert vq.codebook[2].tolist() == [-1.0, 0.0]  # never chosen: keeps its direction (not the origin)


def test_l2_normalize_spherical_kmeans_centroids_are_unit_mean_directions():
    torch.manual_seed(4)
    dirs = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=1)
    x = dirs[torch.arange(3).repeat(50)] * torch.rand(150, 1) * 5 + 0.05 * torch.randn(150, 3)
    vq = VectorQuantizer(3, 6, l2_normalize=True, kmeans_init=True, dead_threshold=0.0).train()
    vq(x.T[None])
    torch.testing.assert_close(vq.codebook.norm(dim=1), torch.ones(6))
    assert (dirs @ vq.codebook.T).max(dim=1).values.min() > 0.99  # every direction has a code on it


def test_rotation_trick_gradient_of_a_vector_quantizer():
    torch.manual_seed(5)
    vq = VectorQuantizer(8, 16, rotation_trick=True, ema=False, dead_threshold=0.0).train()  # codebook stays put
    z = torch.randn(2, 8, 9, requires_grad=True)
    out = vq(z)
    upstream = torch.randn(2, 8, 9)
    out.quantized.backward(upstream)
    assert torch.equal(out.quantized, vq.decode(out.indices))  # the forward is the codes themselves
    x, g = rows_of(z.detach()), rows_of(upstream)
    q = rows_of(out.quantized.detach())
    torch.testing.assert_close(rows_of(z.grad), rotation_vjp(x, q, g))
    assert not torch.allclose(z.grad, upstream)  # not the straight-through identity


def test_rotation_trick_with_projection_and_l2_chains_through_both():
    """The rotation acts in code space, on the normalised rows; autograd carries it through the normalisation
    and the projections."""
    torch.manual_seed(6)
    vq = VectorQuantizer(10, 16, rotation_trick=True, codebook_dim=4, l2_normalize=True, ema=False).eval()
    z = torch.randn(2, 10, 7, requires_grad=True)
    out = vq(z)
    upstream = torch.randn(2, 10, 7)
    out.quantized.backward(upstream)
    # by hand: x = normalize(W z + b), q = codes[idx], y = W_out q~ + b_out with q~ = rotate_to(x, q)
    zr = rows_of(z.detach()).requires_grad_(True)
    x = F.normalize(vq.project_in(zr), dim=1)
    q = vq.codes().detach()[out.indices.reshape(-1)]
    g_code = rows_of(upstream) @ vq.project_out.weight  # gradient reaching q~
    x.backward(rotation_vjp(x.detach(), q, g_code))
    torch.testing.assert_close(rows_of(z.grad), zr.grad)


def test_rvq_rotation_trick_rotates_z_onto_the_sum_of_the_stages():
    torch.manual_seed(7)
    rvq = ResidualVQ(3, 6, 16, rotation_trick=True, kmeans_init=True).train()
    rvq(torch.randn(4, 6, 20))
    rvq.eval()
    z = torch.randn(2, 6, 11, requires_grad=True)
    out = rvq(z)
    torch.testing.assert_close(out.quantized, rvq.decode(rvq.encode(z)))
    upstream = torch.randn(2, 6, 11)
    out.quantized.backward(upstream)
    expected = rotation_vjp(rows_of(z.detach()), rows_of(out.quantized.detach()), rows_of(upstream))
    torch.testing.assert_close(rows_of(z.grad), expected)


def test_rvq_with_a_shared_projection():
    torch.manual_seed(8)
    rvq = ResidualVQ(2, 12, 16, codebook_dim=4, l2_normalize=True, kmeans_init=True)
    assert rvq.project_in.weight.shape == (4, 12) and all(layer.project_in is None for layer in rvq.layers)
    assert {"project_in.weight", "layers.0.codebook", "layers.1.codebook"} <= set(rvq.state_dict())
    z = torch.randn(3, 12, 15, requires_grad=True)
    out = rvq.train()(z)
    (out.quantized.square().mean() + out.loss).backward()
    assert rvq.project_in.weight.grad.abs().sum() > 0 and rvq.project_out.weight.grad.abs().sum() > 0
    rvq.eval()
    codes = rvq.encode(z.detach())
    assert codes.shape == (3, 2, 15) and torch.equal(codes, rvq(z.detach()).codes)
    torch.testing.assert_close(rvq.decode(codes), rvq(z.detach()).quantized)
    # stage 0 codes the direction of the projected input
    x = F.normalize(rows_of(rvq.project_in(z.detach().transpose(1, 2)).transpose(1, 2)), dim=1)
    assert torch.equal(codes[:, 0].reshape(-1), (x @ rvq.layers[0].codebook.T).argmax(dim=1))


OPTIONS = [dict(zip(("ema", "l2_normalize", "codebook_dim", "rotation_trick"), v, strict=True))
           for v in itertools.product([True, False], [True, False], [None, 3], [True, False])]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_options_combine_with_kmeans_restarts_dropout_and_reload(options):
    torch.manual_seed(9)
    kw = dict(kmeans_init=True, dead_threshold=2.0, quantizer_dropout=0.5, **options)
    rvq = ResidualVQ(2, 6, 16, **kw).train()
    opt = torch.optim.SGD([*rvq.parameters(), torch.zeros(1, requires_grad=True)], lr=0.1)  # EMA: maybe none
    for step in range(3):
        z = torch.randn(4, 6, 12, requires_grad=True)
        out = rvq(z)
        opt.zero_grad()
        (out.quantized.square().mean() + out.loss).backward()
        opt.step()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0, step
    if options["l2_normalize"]:
        for layer in rvq.layers:
            torch.testing.assert_close(layer.codes().norm(dim=1), torch.ones(16))
    clone = ResidualVQ(2, 6, 16, **kw)
    clone.load_state_dict(rvq.state_dict())
    z = torch.randn(2, 6, 9)
    codes = rvq.eval().encode(z)
    assert torch.equal(clone.eval().encode(z), codes)
    torch.testing.assert_close(rvq(z).quantized, rvq.decode(codes))


def test_nearest_search_goes_through_the_fused_op(monkeypatch):
    calls = []
    real = torch.ops.vqaudio.nearest_code

    class Spy:
        def __call__(self, x, codebook):
            calls.append((x.shape, codebook.shape))
            return real(x, codebook)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(torch.ops.vqaudio, "nearest_code", Spy())
    vq = VectorQuantizer(12, 20, codebook_dim=5, l2_normalize=True, rotation_trick=True).train()
    vq(torch.randn(2, 12, 7))
    vq.eval().encode(torch.randn(2, 12, 7))
    assert calls == [((14, 5), (20, 5))] * 2
    assert vqaudio.ops.KERNEL in ("compiled", "reference")


@pytest.mark.parametrize("kwargs,match", [
    (dict(codebook_dim=9), "codebook_dim"), (dict(codebook_dim=0), "codebook_dim"), (dict(codebook_dim=2.5), "codebook_dim"),
    (dict(decay=1.0), "decay"),
])
def test_bad_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VectorQuantizer(8, 16, **kwargs)
    with pytest.raises(ConfigError, match=match):
        ResidualVQ(2, 8, 16, **kwargs)
    with pytest.raises(ConfigError, match="n_q"):
        ResidualVQ(0, 8, 16)


@pytest.mark.parametrize("rotation_trick", [False, True])
def test_rvq_with_l2_normalize_has_no_radial_gradient(rotation_trick):
    """Cosine stages pass the gradient through their normalisation: with one stage it is orthogonal to the
    input, so nothing pushes on the input's norm (which would shrink until 1/||z|| explodes)."""
    torch.manual_seed(11)
    rvq = ResidualVQ(1, 6, 16, l2_normalize=True, rotation_trick=rotation_trick, ema=False).train()
    assert rvq.gradient == "stages" and rvq.layers[0].rotation_trick == rotation_trick
    z = torch.randn(3, 6, 20, requires_grad=True)
    rvq(z).quantized.backward(torch.randn(3, 6, 20))
    radial = (z.grad * z.detach()).sum(1) / z.detach().norm(dim=1)
    assert radial.abs().max() < 1e-5 * z.grad.norm(dim=1).max()
    assert ResidualVQ(2, 6, 16, rotation_trick=True).gradient == "rotation"  # without l2: the stack's rotation
