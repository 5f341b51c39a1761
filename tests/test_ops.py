import math

import numpy as np
import pytest
import torch
from scipy import special

from grafs.errors import UserError
from grafs.ops import INF, OPERATIONS, SLOTS, candidates, operation, space_size

X = np.concatenate([np.linspace(-30, 30, 601), [-1e-4, 0.0, 1e-4]])
Y = np.linspace(5, -4, len(X))
BETA = 0.7

SQ, CB, LN, AS = math.sqrt(INF), INF ** (1 / 3), math.log(INF), math.asinh(INF)


def sigmoid(v):
    return special.expit(v)


def gelu(v):
    return 0.5 * v * (1 + special.erf(v / math.sqrt(2)))


# name -> (unbounded reference, bounded reference); for unbounded-only ops both are equal
UNARY = {
    "identity": (lambda x: x,) * 2,
    "neg": (lambda x: -x,) * 2,
    "abs": (np.abs,) * 2,
    "square": (lambda x: x**2, lambda x: np.minimum(x**2, INF)),
    "cube": (lambda x: x**3, lambda x: np.clip(x**3, -INF, INF)),
    "sqrt": (lambda x: np.sqrt(np.maximum(x, 1e-3)),) * 2,
    "add_beta": (lambda x: x + BETA,) * 2,
    "mul_beta": (lambda x: BETA * x,) * 2,
    "beta": (lambda x: np.full_like(x, BETA),) * 2,
    "exp": (np.exp, lambda x: np.minimum(np.exp(x), INF)),
    "sinh": (np.sinh, lambda x: np.clip(np.sinh(x), -INF, INF)),
    "tanh": (np.tanh,) * 2,
    "asinh": (np.arcsinh,) * 2,
    "atan": (np.arctan,) * 2,
    "relu": (lambda x: np.maximum(x, 0),) * 2,
    "min0": (lambda x: np.minimum(x, 0),) * 2,
    "sigmoid": (sigmoid,) * 2,
    "softplus": (lambda x: np.logaddexp(0, x),) * 2,
    "erf": (special.erf,) * 2,
    "silu": (lambda x: x * sigmoid(x),) * 2,
    "gelu": (gelu,) * 2,
    "elu": (lambda x: np.where(x > 0, x, np.expm1(x)),) * 2,
    "leaky_relu": (lambda x: np.where(x > 0, x, 0.01 * x),) * 2,
    "log_abs": (lambda x: np.log(np.abs(x) + 1e-5),) * 2,
    "sin": (np.sin,) * 2,
    "cos": (np.cos,) * 2,
    "cosh": (np.cosh, lambda x: np.minimum(np.cosh(x), INF)),
    "sinc": (lambda x: np.sinc(x / np.pi),) * 2,
    "gaussian": (lambda x: np.exp(-(x**2)),) * 2,
}
BINARY = {
    "add": (lambda a, b: a + b,) * 2,
    "sub": (lambda a, b: a - b,) * 2,
    "mul": (lambda a, b: a * b, lambda a, b: np.clip(a, -SQ, SQ) * np.clip(b, -SQ, SQ)),
    "max": (np.maximum,) * 2,
    "min": (np.minimum,) * 2,
    "sig_mul": (lambda a, b: sigmoid(a) * b,) * 2,
    "beta_mix": (lambda a, b: sigmoid(BETA) * a + (1 - sigmoid(BETA)) * b,) * 2,
    "left": (lambda a, b: a,) * 2,
    "right": (lambda a, b: b,) * 2,
    "div": (lambda a, b: a / b,) * 2,
    "exp_neg_abs_diff": (lambda a, b: np.exp(-np.abs(a - b)),) * 2,
    "exp_neg_sq_diff": (lambda a, b: np.exp(-((a - b) ** 2)),) * 2,
}


def test_space_has_the_published_size():
    assert len(candidates(1)) == 23 and len(candidates(2)) == 9
    assert space_size() == 23**4 * 9**2 == 22_667_121
    assert sum(len(candidates(2 if s.startswith("b") else 1)) for s in SLOTS) == 110
    assert len(candidates(1, "extended")) == 29 and len(candidates(2, "extended")) == 12
    assert set(UNARY) | set(BINARY) == set(OPERATIONS)


@pytest.mark.parametrize("bounded", [True, False])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_matches_formula_and_bound(name, bounded):
    x = torch.tensor(X, dtype=torch.float64)
    with np.errstate(all="ignore"):
        expected = UNARY[name][1 if bounded else 0](X)
    got = operation(name)(x, beta=torch.tensor(BETA, dtype=torch.float64), bounded=bounded).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bounded", [True, False])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_matches_formula_and_bound(name, bounded):
    a, b = torch.tensor(X, dtype=torch.float64), torch.tensor(Y, dtype=torch.float64)
    with np.errstate(all="ignore"):
        expected = BINARY[name][1 if bounded else 0](X, Y)
    got = operation(name)(a, b, beta=torch.tensor(BETA, dtype=torch.float64), bounded=bounded).numpy()
    np.testing.assert_allclose(got, np.nan_to_num(expected, posinf=INF, neginf=-INF), rtol=1e-9, atol=1e-12)


def test_bounded_outputs_stay_within_bounds_and_finite():
    x = torch.linspace(-1e4, 1e4, 10001)
    for name in ("square", "cube", "exp", "sinh", "cosh"):
        out = operation(name)(x, bounded=True)
        assert torch.isfinite(out).all() and out.abs().max() <= INF + 1e-4, name
    out = operation("mul")(x, x.flip(0), bounded=True)
    assert out.abs().max() <= INF + 1e-4
    assert operation("sqrt")(torch.tensor([-5.0, 0.0]), bounded=True).min() == pytest.approx(math.sqrt(1e-3))


def test_division_by_zero_is_mapped_to_inf_bound():
    out = operation("div")(torch.tensor([1.0, -1.0, 0.0]), torch.zeros(3))
    assert out.tolist() == [INF, -INF, 0.0]


def test_beta_ops_and_their_initialisation():
    with_beta = {op.name: op.beta_init for op in OPERATIONS.values() if op.has_beta}
    assert with_beta == {"add_beta": "normal", "mul_beta": "normal", "beta": "normal", "beta_mix": "zero"}


def test_unknown_operation_lists_choices():
    with pytest.raises(UserError, match="unknown operation 'swish'.*valid choices: .*gelu"):
        operation("swish")
