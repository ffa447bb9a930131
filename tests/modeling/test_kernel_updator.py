"""knet_d2.modeling.kernel_updator: KernelUpdator against the equations of docs/reference.md
§1.4, and its split into channel halves. Tiny dims (tests/helpers/knet_parts.py)."""
import pytest
import torch
import torch.nn.functional as F

from knet_d2.modeling import KernelUpdator
from tests.helpers.knet_parts import C, N, randomise_norms

pytestmark = pytest.mark.usefixtures("seed_torch")  # torch.manual_seed(0) before each test


def _updator_formula(u: KernelUpdator, fk: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The docs/reference.md §1.4 step-3 equations written independently of the module."""
    cf = u.feat_channels
    phi = fk @ u.dynamic_layer.weight.T + u.dynamic_layer.bias
    kap = k @ u.input_layer.weight.T + u.input_layer.bias
    phi_in, phi_out = phi[..., :cf], phi[..., cf:]
    kap_in, kap_out = kap[..., :cf], kap[..., cf:]
    fg = kap_in * phi_in

    def ln(x, m):
        return F.layer_norm(x, (x.shape[-1],), m.weight, m.bias, m.eps)

    g_k = torch.sigmoid(ln(F.linear(fg, u.input_gate.weight, u.input_gate.bias), u.input_norm_in))
    g_f = torch.sigmoid(ln(F.linear(fg, u.update_gate.weight, u.update_gate.bias), u.norm_in))
    kt = g_f * ln(phi_out, u.norm_out) + g_k * ln(kap_out, u.input_norm_out)
    return torch.relu(ln(F.linear(kt, u.fc_layer.weight, u.fc_layer.bias), u.fc_norm))


def test_updator_matches_equations():
    u = KernelUpdator(C)
    randomise_norms(u)
    fk, k = torch.randn(2, N, C), torch.randn(2, N, C)
    out = u(fk, k)
    assert out.shape == (2, N, C)
    torch.testing.assert_close(out, _updator_formula(u, fk, k))
    # the two inputs play different roles
    assert not torch.allclose(out, u(k, fk))


def test_updator_split_halves_equals_loop_over_halves():
    u = KernelUpdator(C)
    randomise_norms(u)
    fk, k = torch.randn(3, N, 2 * C), torch.randn(3, N, 2 * C)
    out = u(fk, k)
    assert out.shape == (3, N, 2 * C)
    halves = [u(fk[..., i * C:(i + 1) * C], k[..., i * C:(i + 1) * C]) for i in range(2)]
    torch.testing.assert_close(out, torch.cat(halves, dim=-1))
    with pytest.raises(AssertionError):
        u(torch.randn(1, N, C + 3), torch.randn(1, N, C + 3))
