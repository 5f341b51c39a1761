import math
import time
import warnings

import pytest
import torch
from torch import nn

import grafs.fused as fused
from grafs.cell import SearchCell
from grafs.ops import SLOTS, slot_candidates

SHAPE = (3, 5, 17, 19)  # 4845 elements: several kernel blocks and a ragged tail


def shrunk(cell: SearchCell, per_slot: int) -> SearchCell:
    for slot, count in enumerate(cell.active_counts()):
        for _ in range(count - per_slot):
            cell.drop(slot)
    return cell


def randomize(cell: SearchCell) -> SearchCell:
    """Spread alphas and betas so that every op has a distinct weight and beta."""
    with torch.no_grad():
        for parameter in cell.arch_parameters():
            parameter.normal_(0.0, 0.7)
    return cell


def evaluate(cell: SearchCell, x: torch.Tensor, fast: bool, seed: int = 7) -> list[torch.Tensor]:
    """Output and gradients w.r.t. input, alphas and betas, for one seeded draw."""
    cell.fast = fast
    cell.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    weights, betas, _ = cell.sample()
    y = cell.mixture(x, weights, betas)
    y.backward(torch.linspace(-1.0, 1.0, y.numel()).reshape(y.shape))
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in cell.arch_parameters()]
    return [y.detach(), x.grad, *grads]


def assert_equal_paths(cell: SearchCell, x: torch.Tensor) -> None:
    plain, fast = evaluate(cell, x, fast=False), evaluate(cell, x, fast=True)
    for name, a, b in zip(["output", "input grad", *(f"arch grad {i}" for i in range(12))], fast, plain, strict=True):
        scale = b.abs().max().item() if b.numel() else 0.0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(scale, 1.0), msg=lambda m, n=name: f"{n}: {m}")


@pytest.fixture(params=["native", "chunked"])
def backend(request, monkeypatch):
    if request.param == "native":
        if fused.native_kernel() is None:
            pytest.skip("no C compiler: the native kernel is unavailable")
    else:
        monkeypatch.setattr(fused, "_native_kernel", lambda x, plan, warn=True: None)
        monkeypatch.setattr(fused, "CPU_CHUNK", 1000)  # several chunks
    return request.param


@pytest.mark.parametrize("bounded", [True, False])
@pytest.mark.parametrize("per_slot", [None, 4])
def test_fast_path_equals_plain_path_in_outputs_and_gradients(backend, bounded, per_slot):
    torch.manual_seed(0)
    cell = randomize(SearchCell(bounded=bounded))
    if per_slot:
        shrunk(cell, per_slot)
    # Unbounded ops overflow float32 on large inputs (exp of cube...), so keep those inputs small.
    x = torch.randn(SHAPE) * (2.0 if bounded else 0.6)
    assert_equal_paths(cell, x)


def test_fast_path_equals_plain_path_at_kinks_and_clamp_edges(backend):
    torch.manual_seed(1)
    cell = randomize(SearchCell())
    edges = [0.0, 1e-3, -math.sqrt(10), math.sqrt(10), 10 ** (1 / 3), math.log(10), math.asinh(10), 20.0, -100.0]
    x = torch.tensor(edges * 40).reshape(9, 40)
    assert_equal_paths(cell, x)


def test_piecewise_linear_ops_keep_their_own_gradients_at_zero_and_nan(backend):
    """The kernel evaluates abs, relu, min0 and leaky_relu from two shared rows; at 0 and at NaN,
    where their derivatives disagree with the rows', each keeps its own convention."""
    torch.manual_seed(3)
    cell = randomize(SearchCell())
    keep = {"abs", "relu", "min0", "leaky_relu", "add", "left"}
    for index in range(len(SLOTS)):
        with torch.no_grad():
            for k, op in enumerate(cell.candidates[index]):
                if op.name in keep:
                    cell.alphas[index][k] = 5.0 + k  # distinct, and above every other op's
        while set(cell.active_ops(index)) - keep:
            cell.drop(index)
    x = torch.tensor([0.0, -0.0, 1.5, -2.0, float("nan"), 1e-3, -1e-3] * 30)
    plain, fast = evaluate(cell, x, fast=False), evaluate(cell, x, fast=True)
    for name, a, b in zip(["output", "input grad", *(f"arch grad {i}" for i in range(12))], fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, equal_nan=True, msg=lambda m, n=name: f"{n}: {m}")
    assert torch.isfinite(fast[1]).all()  # NaN inputs still get each op's finite derivative


def test_the_kernel_follows_the_installed_torch_at_clamp_bounds(monkeypatch):
    if fused.native_kernel() is None:
        pytest.skip("no C compiler: the native kernel is unavailable")
    cell = SearchCell()
    for index in range(len(SLOTS)):
        keep = {"u0": "square", "b0": "left", "b1": "left"}.get(SLOTS[index], "identity")
        while cell.active_ops(index) != (keep,):
            alphas = cell.alphas[index].detach()
            alphas[[op.name == keep for op in cell.candidates[index]]] = 1.0
            cell.drop(index)
    weights, betas, _ = cell.sample()
    bound = torch.tensor([math.sqrt(10)], requires_grad=True)
    for passes, expected in ((False, 0.0), (True, 2 * bound.item())):
        monkeypatch.setattr(fused, "clamp_edges_pass_gradient", lambda passes=passes: passes)
        (grad,) = torch.autograd.grad(cell.mixture(bound, weights, betas).sum(), bound)
        assert grad.item() == pytest.approx(expected)


def test_fast_path_handles_the_extended_space():
    torch.manual_seed(2)
    cell = shrunk(randomize(SearchCell(space="extended")), 8)
    assert_equal_paths(cell, torch.randn(4, 50))


def test_the_native_kernel_knows_every_standard_operation():
    kernel = fused.native_kernel()
    if kernel is None:
        pytest.skip("no C compiler: the native kernel is unavailable")
    plan = SearchCell().plan()
    assert kernel.supports(plan)
    assert fused._native_kernel(torch.zeros(3), plan) is kernel


def test_without_a_compiler_the_fast_path_warns_and_falls_back(monkeypatch):
    monkeypatch.setattr(fused.shutil, "which", lambda name: None)
    problem = fused._compiled_kernel.__wrapped__()
    assert "no C compiler" in problem
    monkeypatch.setattr(fused, "_compiled_kernel", lambda: problem)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert fused.native_kernel.__wrapped__() is None


def test_initial_parameters():
    cell = SearchCell()
    for slot, options in zip(SLOTS, (slot_candidates(s) for s in SLOTS), strict=True):
        alpha = cell.alphas[slot]
        assert alpha.shape == (len(options),) and 0.0 <= alpha.min() and alpha.max() <= 1e-6
    assert cell.betas["u0"].shape == (3,) and cell.betas["b0"].tolist() == [0.0]
    assert cell.active_counts() == [23, 23, 9, 23, 23, 9]
    assert len(cell.arch_parameters()) == 12


def network(cell: SearchCell, sites: int = 3) -> nn.Module:
    layers = []
    for _ in range(sites):
        layers += [nn.Linear(8, 8), cell.site(nn.ReLU())]
    return nn.Sequential(*layers)


def sites_of(model: nn.Module):
    return [m for m in model.modules() if type(m).__name__ == "CellSite"]


def test_every_site_draws_its_own_sample_each_pass():
    cell = SearchCell()
    model = network(cell)
    model(torch.randn(4, 8))
    first = [site.last_weights for site in sites_of(model)]
    for slot in SLOTS:
        assert not torch.equal(first[0][slot], first[1][slot])
        assert not torch.equal(first[1][slot], first[2][slot])
    model(torch.randn(4, 8))
    assert not torch.equal(first[0]["u0"], sites_of(model)[0].last_weights["u0"])


def test_shared_sample_serves_every_site_of_a_pass():
    cell = SearchCell(shared_sample=True)
    model = network(cell)
    cell.attach_pass_hook(model)
    model(torch.randn(4, 8)).sum().backward()
    first = [site.last_weights for site in sites_of(model)]
    for slot in SLOTS:
        assert torch.equal(first[0][slot], first[1][slot]) and torch.equal(first[0][slot], first[2][slot])
    model(torch.randn(4, 8)).sum().backward()  # a new pass draws anew (and its graph is fresh)
    assert not torch.equal(first[0]["u0"], sites_of(model)[0].last_weights["u0"])


def test_mixture_weights_cover_only_active_ops():
    torch.manual_seed(3)
    cell = shrunk(randomize(SearchCell()), 5)
    cell.drop("b1")
    model = network(cell, sites=1)
    model(torch.randn(4, 8))
    used = sites_of(model)[0].last_weights
    for index, slot in enumerate(SLOTS):
        assert used[slot].shape == (len(cell.active_ops(index)),)
        assert torch.all(used[slot] >= 0) and used[slot].sum().item() == pytest.approx(1.0, abs=1e-5)
    weights, _, _ = cell.sample()
    inactive = torch.cat([~cell.mask(index) for index in range(len(SLOTS))])
    assert torch.all(weights[inactive] == 0) and torch.all(weights[~inactive] > 0)


def test_each_slot_draws_its_dirichlet_and_its_gradient_moves_the_expected_weights():
    torch.manual_seed(11)
    cell = shrunk(randomize(SearchCell()), 4)
    cell.drop("u3")  # slots of different sizes in one draw
    draws = 4000
    samples = {slot: [] for slot in SLOTS}
    for _ in range(draws):
        _, _, per_slot = cell.sample()
        for slot, weights in per_slot.items():
            samples[slot].append(weights.detach())
    for index, slot in enumerate(SLOTS):
        concentration = torch.nn.functional.elu(cell.active_alphas(index).detach()) + 1
        expected = concentration / concentration.sum()
        variance = expected * (1 - expected) / (concentration.sum() + 1)
        mean = torch.stack(samples[slot]).mean(0)
        assert torch.all((mean - expected).abs() <= 5 * (variance / draws).sqrt()), slot
    # The reparameterized gradient of E[w_0] for u0 agrees with the closed form's gradient.
    cell.zero_grad(set_to_none=True)
    sum(cell.sample()[2]["u0"][0] for _ in range(draws)).backward()
    alphas = cell.active_alphas(0).detach().requires_grad_()
    concentration = torch.nn.functional.elu(alphas) + 1
    (exact,) = torch.autograd.grad(concentration[0] / concentration.sum(), alphas)
    estimate = cell.alphas["u0"].grad[list(cell.plan().active[0])] / draws
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0.1)


def test_a_slot_with_one_op_left_weights_it_by_one():
    cell = shrunk(SearchCell(), 1)
    weights, _, per_slot = cell.sample()
    assert all(w.tolist() == [1.0] for w in per_slot.values())
    x = torch.randn(10, requires_grad=True)
    cell.mixture(x, weights, _).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_drop_removes_the_smallest_alpha_active_op():
    cell = SearchCell()
    names = [op.name for op in slot_candidates("u2")]
    with torch.no_grad():
        cell.alphas["u2"].copy_(torch.arange(23, dtype=torch.float32))
        cell.alphas["u2"][names.index("gelu")] = -5.0
        cell.alphas["u2"][names.index("tanh")] = -3.0
    assert cell.drop("u2") == "gelu"
    assert "gelu" not in cell.active_ops("u2") and cell.active_counts()[3] == 22
    assert cell.drop(3) == "tanh"
    assert cell.drop(3) == "identity"  # the smallest among those still active
    with torch.no_grad():
        cell.alphas["b1"][4] = float("nan")
    name = cell.drop()  # no slot given: the fullest slot (u0, first on ties) loses one
    assert cell.active_counts()[:3] == [22, 23, 9] and name not in cell.active_ops("u0")
    assert cell.drop("b1") == slot_candidates("b1")[4].name  # NaN counts as the smallest
    shrunk(cell, 1)
    with pytest.raises(ValueError, match="single active op"):
        cell.drop("u0")


def test_discretize_takes_the_largest_active_alpha_with_its_beta():
    cell = SearchCell(bounded=False)
    u0 = [op.name for op in slot_candidates("u0")]
    b1 = [op.name for op in slot_candidates("b1")]
    with torch.no_grad():
        cell.alphas["u0"][u0.index("silu")] = 5.0  # the largest, but dropped below
        cell.alphas["u0"][u0.index("mul_beta")] = 3.0
        cell.betas["u0"][1] = 0.37  # mul_beta's beta (add_beta, mul_beta, beta)
        cell.alphas["b1"][b1.index("beta_mix")] = 2.0
        cell.betas["b1"][0] = -0.25
        cell.alphas["u0"][u0.index("silu")] = -100.0
    cell.drop("u0")
    genotype = cell.discretize()
    assert genotype.ops[0] == "mul_beta" and genotype.betas[0] == pytest.approx(0.37)
    assert genotype.ops[5] == "beta_mix" and genotype.betas[5] == pytest.approx(-0.25)
    assert genotype.bounded is False
    assert all(beta is None for op, beta in zip(genotype.operations, genotype.betas, strict=True) if not op.has_beta)


def test_use_default_makes_every_site_compute_the_default():
    cell = SearchCell()
    model = network(cell)
    cell.use_default = True
    x = torch.randn(4, 8)
    expected = x
    for layer in model:
        expected = torch.relu(layer(expected)) if isinstance(layer, nn.Linear) else expected
    torch.testing.assert_close(model(x), expected)
    cell.use_default = False
    assert not torch.allclose(model(x), expected)


def test_nonfinite_alphas_and_betas_are_repaired_and_counted():
    cell = SearchCell()
    with torch.no_grad():
        cell.alphas["u0"][3] = float("nan")
        cell.alphas["b0"][1] = float("inf")
        cell.betas["u3"][0] = float("nan")
    x = torch.randn(6, 8, requires_grad=True)
    y = cell.site(nn.ReLU())(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in cell.arch_parameters())
    assert cell.nonfinite_events == 3
    cell.site(nn.ReLU())(x)
    assert cell.nonfinite_events == 6
    cell.nonfinite_events = 0
    assert cell.nonfinite_events == 0


def test_cell_parameters_stay_out_of_the_model():
    cell = SearchCell()
    model = network(cell)
    model_parameters = {id(p) for p in model.parameters()}
    assert not model_parameters & {id(p) for p in cell.parameters()}
    assert not any("alpha" in key or "beta" in key for key in model.state_dict())
    assert all(site.cell is cell for site in sites_of(model))


def test_a_seeded_search_step_is_reproducible():
    def run() -> torch.Tensor:
        torch.manual_seed(11)
        cell = SearchCell()
        model = network(cell)
        return model(torch.randn(4, 8))

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_mask_survives_a_state_dict_round_trip():
    cell = shrunk(SearchCell(), 7)
    other = SearchCell()
    other.load_state_dict(cell.state_dict())
    assert other.active_counts() == [7] * 6
    assert [other.active_ops(i) for i in range(6)] == [cell.active_ops(i) for i in range(6)]


def test_fast_path_first_call_is_quick():
    cell = SearchCell()
    x = torch.randn(64, 64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        cell.site(nn.ReLU())(x).sum().backward()
    assert time.perf_counter() - start < 60
