import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import grafs.fused as fused
import grafs.genotype as genotype_module
from grafs.errors import UserError
from grafs.genotype import Genotype
from grafs.ops import SLOTS, operation, slot_candidates
from grafs.published import PUBLISHED_GENOTYPES

VIT1 = PUBLISHED_GENOTYPES["grafs-vit-1"]


def test_json_round_trip(tmp_path):
    for genotype in [VIT1, Genotype.random(torch.Generator().manual_seed(3), bounded=False)]:
        path = genotype.save(tmp_path / "g.json")
        data = json.loads(path.read_text())
        assert data["format"] == "grafs-genotype/1" and len(data["ops"]) == 6 and len(data["betas"]) == 6
        assert Genotype.load(path) == genotype


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"format": "grafs-genotype/1", "ops": [], "betas": [], "bounded": true}', "exactly 6 ops"),
        (
            '{"format": "grafs-genotype/1", "ops": ["relu","relu","add","relu","relu","bogus"],'
            ' "betas": [null,null,null,null,null,null], "bounded": true}',
            "unknown operation 'bogus'",
        ),
        (
            '{"format": "grafs-genotype/1", "ops": ["relu","add","add","relu","relu","add"],'
            ' "betas": [null,null,null,null,null,null], "bounded": true}',
            "cannot stand in slot u1",
        ),
        (
            '{"format": "grafs-genotype/1", "ops": ["add_beta","relu","add","relu","relu","add"],'
            ' "betas": [null,null,null,null,null,null], "bounded": true}',
            "needs a beta value",
        ),
        (
            '{"format": "grafs-genotype/1", "ops": ["relu","relu","add","relu","relu","add"],'
            ' "betas": [1.0,null,null,null,null,null], "bounded": true}',
            "has no beta",
        ),
        ('{"format": "grafs-genotype/2", "ops": [], "betas": [], "bounded": true}', "not supported"),
        ('{"format": "grafs-genotype/1", "ops": [], "betas": []}', "missing keys"),
        ('{"format": "grafs-genotype/1", "ops": [], "betas": [], "bounded": 1}', "true or false"),
        ('{"format": "grafs-genotype/1", "ops": [], "betas": [], "bounded": true, "x": 1}', "unknown keys"),
    ],
)
def test_malformed_files_are_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as error:
        Genotype.load(path)
    assert "\n" not in str(error.value)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Genotype.load(tmp_path / "nope.json")


def test_module_computes_the_cell_composition():
    genotype = Genotype(("tanh", "relu", "add", "square", "identity", "sig_mul"), (None,) * 6, bounded=False)
    x = torch.linspace(-3, 3, 50)
    expected = torch.sigmoid((torch.tanh(x) + torch.relu(x)) ** 2) * x
    torch.testing.assert_close(genotype.to_module()(x), expected)


def test_bounds_are_on_by_default_and_can_be_lifted():
    genotype = Genotype.from_ops(("square", "identity", "left", "identity", "identity", "left"))
    x = torch.tensor([10.0])
    assert genotype.to_module()(x).item() == pytest.approx(10.0)
    assert genotype.with_bounds(False).to_module()(x).item() == pytest.approx(100.0)


def test_betas_are_frozen_buffers_or_learnable_parameters():
    genotype = Genotype(
        ("mul_beta", "relu", "beta_mix", "identity", "identity", "add"), (2.0, None, 0.5, None, None, None)
    )
    assert list(genotype.to_module().parameters()) == []
    module = genotype.to_module(learnable_betas=True)
    names = {name for name, _ in module.named_parameters()}
    assert names == {"beta_u0", "beta_b0"}
    module(torch.randn(8)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_formula_simplifies_and_shows_betas():
    assert VIT1.formula() == "0.3993 * GELU(0.4413 * min(x^2, 10) + 0.5587 * GELU(x)) + 0.6007 * SiLU(x)"
    gated = Genotype.from_ops(("gelu", "tanh", "left", "sigmoid", "gelu", "mul"), bounded=False)
    assert gated.formula() == "sigmoid(GELU(x)) * GELU(x)"
    shifted = Genotype(
        ("add_beta", "relu", "left", "identity", "identity", "right"), (-0.5, None, None, None, None, None)
    )
    assert shifted.formula() == "x"
    assert Genotype(("add_beta", "relu", "left", "identity", "identity", "left"), (-0.5,) + (None,) * 5).formula() == (
        "x - 0.5"
    )
    assert r"\mathrm{GELU}" in VIT1.latex() and r"\min" in VIT1.latex()


def test_fingerprint_identifies_functions():
    relu_a = Genotype.from_ops(("relu", "tanh", "left", "identity", "identity", "left"))
    relu_b = Genotype.from_ops(("identity", "identity", "max", "relu", "exp", "left"))  # relu(max(x, x))
    relu_c = Genotype.from_ops(("exp", "relu", "right", "identity", "identity", "left"))
    silu = Genotype.from_ops(("silu", "tanh", "left", "identity", "identity", "left"))
    gated = Genotype.from_ops(("identity", "identity", "left", "identity", "identity", "sig_mul"))  # sigmoid(x) * x
    assert relu_a.fingerprint() == relu_b.fingerprint() == relu_c.fingerprint()
    assert silu.fingerprint() == gated.fingerprint()
    assert relu_a.fingerprint() != silu.fingerprint()
    scaled = Genotype(("mul_beta", "relu", "left", "identity", "identity", "left"), (1.5,) + (None,) * 5)
    assert (
        scaled.fingerprint()
        != Genotype(("mul_beta", "relu", "left", "identity", "identity", "left"), (1.25,) + (None,) * 5).fingerprint()
    )


def test_random_genotypes_are_seeded():
    assert Genotype.random(torch.Generator().manual_seed(7)) == Genotype.random(torch.Generator().manual_seed(7))


# The fast path ----------------------------------------------------------------------------------
# Kinks and clamp bounds of the standard space's ops, then random points.
EDGES = [0.0, 1e-3, -math.sqrt(10), math.sqrt(10), 10 ** (1 / 3), math.log(10), math.asinh(10), 20.0, -100.0]


def points(bounded: bool, count: int, edges: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    # Unbounded ops overflow float32 on large inputs (exp of cube...), so keep those inputs small.
    spread = torch.randn(count, generator=generator, dtype=torch.float64) * (2.0 if bounded else 0.6)
    return torch.cat([torch.tensor(EDGES * 3 if edges else [], dtype=torch.float64), spread]).reshape(-1, 1)


def outputs_and_gradients(genotype: Genotype, x: torch.Tensor, learnable: bool, plain: bool, monkeypatch):
    """Output, input gradient and beta gradients (None where a beta gets none) of one pass."""
    module = genotype.to_module(learnable_betas=learnable).to(x.dtype)
    with monkeypatch.context() as patch:
        if plain:
            patch.setattr(genotype_module, "native_kernel_applies", lambda x, plan: False)
        x = x.detach().clone().requires_grad_()
        y = module(x)
    if plain and not y.requires_grad:  # a function constant in x with fixed betas
        return [y, torch.zeros_like(x)]
    assert type(y.grad_fn).__name__.startswith("_Fused") == (not plain)
    if not plain and not learnable:  # fixed betas: the node that saves the derivative
        assert type(y.grad_fn).__name__ == "_FusedWithDerivativeBackward"
    y.backward(torch.linspace(-1.0, 1.0, y.numel(), dtype=x.dtype).reshape(y.shape))
    # A function constant in x leaves x out of the plain graph; the fused node passes it zeros.
    grad = torch.zeros_like(x) if x.grad is None else x.grad
    return [y.detach(), grad, *(p.grad for p in module.parameters())]


def assert_paths_agree(fast: list, plain: list, rtol: float, what: object) -> None:
    for name, a, b in zip(["output", "input grad", "beta grad", "beta grad", "beta grad"], fast, plain, strict=False):
        if b is None:  # a beta of a branch a projection discards
            assert a is None, name
            continue
        scale = max(b.nan_to_num(posinf=0.0, neginf=0.0).abs().max().item(), 1.0)
        if b.dim() == 0:  # a beta's gradient sums over all elements, in a different order per path
            scale = max(scale, fast[0].numel())
        torch.testing.assert_close(
            a.to(b.dtype), b, rtol=rtol, atol=rtol * scale, equal_nan=True, msg=lambda m, n=name: f"{what}, {n}: {m}"
        )


def every_op_in_every_slot(bounded: bool):
    """Genotypes that put each op of the standard space in each slot, other slots drawn at random."""
    generator = torch.Generator().manual_seed(5)
    for index, slot in enumerate(SLOTS):
        for op in slot_candidates(slot):
            ops = list(Genotype.random(generator, bounded=bounded).ops)
            ops[index] = op.name
            betas = [None if operation(name).beta_init_mean is None else 0.7 - 0.3 * i for i, name in enumerate(ops)]
            yield Genotype(tuple(ops), tuple(betas), bounded)


@pytest.mark.parametrize("bounded", [True, False])
@pytest.mark.parametrize("learnable", [False, True])
def test_fast_path_equals_plain_path_for_every_operation(bounded, learnable, monkeypatch):
    if fused.native_kernel() is None:
        pytest.skip("no C compiler: genotype modules run the plain path only")
    # Unbounded, the edge points overflow or cancel catastrophically (exp(20) - exp(20)) in float32.
    x, smooth = points(bounded, 2000, edges=bounded), points(bounded, 2000, edges=False)
    for genotype in every_op_in_every_slot(bounded):
        fast = outputs_and_gradients(genotype, x.float(), learnable, plain=False, monkeypatch=monkeypatch)
        plain = outputs_and_gradients(genotype, x.float(), learnable, plain=True, monkeypatch=monkeypatch)
        assert_paths_agree(fast, plain, rtol=1e-5, what=genotype)
        # Float64 inputs take the plain path; away from kinks (where float32 and float64 points fall on
        # different sides) the fused float32 pass agrees with it to float32 rounding.
        fast = outputs_and_gradients(genotype, smooth.float(), learnable, plain=False, monkeypatch=monkeypatch)
        plain = outputs_and_gradients(genotype, smooth, learnable, plain=True, monkeypatch=monkeypatch)
        assert_paths_agree(fast, plain, rtol=1e-4, what=genotype)


@pytest.mark.parametrize("name", sorted(PUBLISHED_GENOTYPES))
def test_fast_path_splits_large_inputs_between_threads_with_the_same_result(name, monkeypatch):
    if fused.native_kernel() is None:
        pytest.skip("no C compiler: genotype modules run the plain path only")
    x = points(True, 100_000).float()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fast = outputs_and_gradients(PUBLISHED_GENOTYPES[name], x, True, plain=False, monkeypatch=monkeypatch)
    finally:
        torch.set_num_threads(threads)
    plain = outputs_and_gradients(PUBLISHED_GENOTYPES[name], x, True, plain=True, monkeypatch=monkeypatch)
    assert_paths_agree(fast, plain, rtol=1e-5, what=name)


def test_without_a_compiler_genotype_modules_run_the_plain_path_silently(monkeypatch):
    monkeypatch.setattr(fused, "_compiled_kernel", lambda: "no C compiler found")
    genotype = PUBLISHED_GENOTYPES["grafs-gpt-0"]
    x = torch.randn(100, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = genotype.to_module()(x)
    assert not type(y.grad_fn).__name__.startswith("_Fused")
    bound = math.sqrt(10)  # of the bounded mul
    inner = F.silu(torch.sigmoid(torch.relu(x)) * F.gelu(x))
    torch.testing.assert_close(y, inner.clamp(-bound, bound) * F.silu(x).clamp(-bound, bound))
