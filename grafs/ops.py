"""The GRAFS operation space: the single definition of every unary and binary operation.

Everything that names, computes, bounds or prints an operation (the search cell, genotypes,
the black-box baselines, reports and the CLI) reads it from here.

The cell computes ``f(x) = b1(u2(b0(u0(x), u1(x))), u3(x))``: four unary slots and two binary
slots. "Bounded" operations are the clamps of the reference implementation (``INF = 10``,
square-root floor ``1e-3``); they keep the supernet finite during search and stay on when a
discovered function is retrained, unless a genotype says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from grafs.config import SPACES
from grafs.errors import UserError, unknown_name

INF = 10.0
SQRT_FLOOR = 1e-3
BETA_INIT_MEAN = 1.0
BETA_INIT_STD = 0.25

SLOTS: tuple[str, ...] = ("u0", "u1", "b0", "u2", "u3", "b1")
SLOT_ARITY: dict[str, int] = {"u0": 1, "u1": 1, "b0": 2, "u2": 1, "u3": 1, "b1": 2}

_SQRT_INF = math.sqrt(INF)
_CBRT_INF = INF ** (1.0 / 3.0)
_LOG_INF = math.log(INF)
_ASINH_INF = math.asinh(INF)
_ACOSH_INF = math.acosh(INF)

# Precedence of a rendered expression, used to decide where parentheses are needed.
SUM, PRODUCT, NEGATION, POWER, ATOM = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Expr:
    """A rendered sub-expression and the precedence of its outermost operator."""

    text: str
    precedence: int


def _group(expr: Expr, at_least: int, latex: bool) -> str:
    if expr.precedence >= at_least:
        return expr.text
    return rf"\left({expr.text}\right)" if latex else f"({expr.text})"


def format_number(value: float) -> str:
    return f"{value:.4g}"


Renderer = Callable[[Sequence[Expr], "float | None", bool, bool], Expr]
"""(arguments, beta, bounded, latex) -> rendered expression."""


def _call(text_name: str, latex_name: str) -> Renderer:
    def render(args: Sequence[Expr], beta: float | None, bounded: bool, latex: bool) -> Expr:
        inner = ", ".join(a.text for a in args)
        if latex:
            return Expr(rf"{latex_name}\left({inner}\right)", ATOM)
        return Expr(f"{text_name}({inner})", ATOM)

    return render


def _clipped(render: Renderer, low: str, high: str) -> Renderer:
    """Show the output clamp of a bounded operation around its plain rendering."""

    def wrapped(args: Sequence[Expr], beta: float | None, bounded: bool, latex: bool) -> Expr:
        plain = render(args, beta, bounded, latex)
        if not bounded:
            return plain
        if low == "":
            return _call("min", r"\min")([plain, Expr(high, ATOM)], None, bounded, latex)
        return _call("clip", r"\mathrm{clip}")([plain, Expr(low, ATOM), Expr(high, ATOM)], None, bounded, latex)

    return wrapped


def _power(exponent: int) -> Renderer:
    def render(args: Sequence[Expr], beta: float | None, bounded: bool, latex: bool) -> Expr:
        base = _group(args[0], ATOM, latex)
        return Expr(f"{base}^{{{exponent}}}" if latex else f"{base}^{exponent}", POWER)

    return render


def _identity(args, beta, bounded, latex):
    return args[0]


def _negate(args, beta, bounded, latex):
    return Expr("-" + _group(args[0], POWER, latex), NEGATION)


def _absolute(args, beta, bounded, latex):
    if latex:
        return Expr(rf"\left|{args[0].text}\right|", ATOM)
    return Expr(f"|{args[0].text}|", ATOM)


def _sqrt(args, beta, bounded, latex):
    inner = args[0]
    if bounded:
        inner = _call("max", r"\max")([inner, Expr(format_number(SQRT_FLOOR), ATOM)], None, bounded, latex)
    if latex:
        return Expr(rf"\sqrt{{{inner.text}}}", ATOM)
    return Expr(f"sqrt({inner.text})", ATOM)


def _exp(args, beta, bounded, latex):
    if latex:
        return Expr(rf"e^{{{args[0].text}}}", POWER)
    return Expr(f"exp({args[0].text})", ATOM)


def _sum(left: Expr, right: Expr, minus: bool, latex: bool) -> Expr:
    if right.precedence == NEGATION:
        # a + -b reads as a - b, and a - -b as a + b.
        right, minus = Expr(right.text[1:], POWER), not minus
    sign = "-" if minus else "+"
    right_text = _group(right, PRODUCT if minus else SUM, latex)
    return Expr(f"{_group(left, SUM, latex)} {sign} {right_text}", SUM)


def _scaled(factor: float, expr: Expr, latex: bool) -> Expr:
    if factor == 1.0:
        return expr
    times = r" \cdot " if latex else " * "
    return Expr(f"{format_number(factor)}{times}{_group(expr, PRODUCT, latex)}", PRODUCT)


def _product(left: Expr, right: Expr, latex: bool) -> Expr:
    times = r" \cdot " if latex else " * "
    return Expr(f"{_group(left, PRODUCT, latex)}{times}{_group(right, PRODUCT + 1, latex)}", PRODUCT)


def _add_beta(args, beta, bounded, latex):
    return _sum(args[0], Expr(format_number(abs(beta)), ATOM), beta < 0, latex)


def _mul_beta(args, beta, bounded, latex):
    return _scaled(beta, args[0], latex)


def _constant(args, beta, bounded, latex):
    return Expr(format_number(beta), ATOM if beta >= 0 else NEGATION)


def _add(args, beta, bounded, latex):
    return _sum(args[0], args[1], False, latex)


def _sub(args, beta, bounded, latex):
    return _sum(args[0], args[1], True, latex)


def _mul(args, beta, bounded, latex):
    left, right = args
    if bounded:
        bound = r"\pm\sqrt{10}" if latex else "±sqrt(10)"
        clip = _call("clip", r"\mathrm{clip}")
        left = clip([left, Expr(bound, ATOM)], None, bounded, latex)
        right = clip([right, Expr(bound, ATOM)], None, bounded, latex)
    return _product(left, right, latex)


def _gated(args, beta, bounded, latex):
    gate = _call("sigmoid", r"\sigma")([args[0]], None, bounded, latex)
    return _product(gate, args[1], latex)


def _beta_mix(args, beta, bounded, latex):
    weight = 1.0 / (1.0 + math.exp(-beta))
    return _sum(_scaled(weight, args[0], latex), _scaled(1.0 - weight, args[1], latex), False, latex)


def _left(args, beta, bounded, latex):
    return args[0]


def _right(args, beta, bounded, latex):
    return args[1]


def _log_abs(args, beta, bounded, latex):
    if latex:
        return Expr(rf"\log\left(\left|{args[0].text}\right| + 10^{{-5}}\right)", ATOM)
    return Expr(f"log(|{args[0].text}| + 1e-05)", ATOM)


def _gaussian(args, beta, bounded, latex):
    square = _power(2)(args, beta, bounded, latex)
    return _exp([Expr("-" + square.text, NEGATION)], None, bounded, latex)


def _divide(args, beta, bounded, latex):
    left, right = args
    if latex:
        return Expr(rf"\frac{{{left.text}}}{{{right.text}}}", ATOM)
    return Expr(f"{_group(left, PRODUCT, latex)} / {_group(right, PRODUCT + 1, latex)}", PRODUCT)


def _neg_abs_difference(args, beta, bounded, latex):
    difference = _sub(args, beta, bounded, latex)
    return _exp([_negate([_absolute([difference], None, bounded, latex)], None, bounded, latex)], None, bounded, latex)


def _neg_squared_difference(args, beta, bounded, latex):
    difference = _sub(args, beta, bounded, latex)
    square = _power(2)([difference], None, bounded, latex)
    return _exp([Expr("-" + square.text, NEGATION)], None, bounded, latex)


# Tensor implementations: (inputs..., beta, bounded) -> output. ``beta`` is a scalar tensor or None.
def _square(x, beta, bounded):
    return (x.clamp(-_SQRT_INF, _SQRT_INF) if bounded else x) ** 2


def _cube(x, beta, bounded):
    return (x.clamp(-_CBRT_INF, _CBRT_INF) if bounded else x) ** 3


def _sqrt_fn(x, beta, bounded):
    # Even unbounded, the square root needs a floor: its gradient is infinite at 0.
    return torch.sqrt(x.clamp_min(SQRT_FLOOR))


def _exp_fn(x, beta, bounded):
    return torch.exp(x.clamp_max(_LOG_INF) if bounded else x)


def _sinh_fn(x, beta, bounded):
    return torch.sinh(x.clamp(-_ASINH_INF, _ASINH_INF) if bounded else x)


def _cosh_fn(x, beta, bounded):
    return torch.cosh(x.clamp(-_ACOSH_INF, _ACOSH_INF) if bounded else x)


def _mul_fn(x1, x2, beta, bounded):
    if bounded:
        return x1.clamp(-_SQRT_INF, _SQRT_INF) * x2.clamp(-_SQRT_INF, _SQRT_INF)
    return x1 * x2


def _divide_fn(x1, x2, beta, bounded):
    # Division by zero gives +-inf; the reference maps it to +-INF so the mixture stays finite.
    quotient = x1 / x2
    return torch.nan_to_num(quotient, nan=0.0, posinf=INF, neginf=-INF)


@dataclass(frozen=True)
class Operation:
    """One candidate operation of the cell.

    ``beta_init`` is ``"normal"`` (drawn from N(1, 0.25^2)), ``"zero"`` or ``None`` for
    operations without a learnable scalar.
    """

    name: str
    arity: int
    compute: Callable[..., Tensor]
    render: Renderer
    beta_init: str | None = None
    extended: bool = False

    @property
    def has_beta(self) -> bool:
        return self.beta_init is not None

    @property
    def beta_init_mean(self) -> float | None:
        """The expected initial beta: what a black-box search fixes betas to when it does not tune them."""
        return {"normal": BETA_INIT_MEAN, "zero": 0.0, None: None}[self.beta_init]

    def __call__(self, *inputs: Tensor, beta: Tensor | float | None = None, bounded: bool = True) -> Tensor:
        return self.compute(*inputs, beta, bounded)


def _unary(name, compute, render, beta_init=None, extended=False) -> Operation:
    return Operation(name, 1, compute, render, beta_init, extended)


def _binary(name, compute, render, beta_init=None, extended=False) -> Operation:
    return Operation(name, 2, compute, render, beta_init, extended)


def _broadcast_beta(x, beta, bounded):
    return beta * torch.ones_like(x)


_OPERATIONS: tuple[Operation, ...] = (
    _unary("identity", lambda x, b, bd: x, _identity),
    _unary("neg", lambda x, b, bd: -x, _negate),
    _unary("abs", lambda x, b, bd: torch.abs(x), _absolute),
    _unary("square", _square, _clipped(_power(2), "", "10")),
    _unary("cube", _cube, _clipped(_power(3), "-10", "10")),
    _unary("sqrt", _sqrt_fn, _sqrt),
    _unary("add_beta", lambda x, b, bd: x + b, _add_beta, beta_init="normal"),
    _unary("mul_beta", lambda x, b, bd: b * x, _mul_beta, beta_init="normal"),
    _unary("beta", _broadcast_beta, _constant, beta_init="normal"),
    _unary("exp", _exp_fn, _clipped(_exp, "", "10")),
    _unary("sinh", _sinh_fn, _clipped(_call("sinh", r"\sinh"), "-10", "10")),
    _unary("tanh", lambda x, b, bd: torch.tanh(x), _call("tanh", r"\tanh")),
    _unary("asinh", lambda x, b, bd: torch.asinh(x), _call("asinh", r"\operatorname{asinh}")),
    _unary("atan", lambda x, b, bd: torch.atan(x), _call("atan", r"\arctan")),
    _unary("relu", lambda x, b, bd: F.relu(x), _call("ReLU", r"\mathrm{ReLU}")),
    _unary("min0", lambda x, b, bd: torch.clamp_max(x, 0.0), _call("min0", r"\min_0")),
    _unary("sigmoid", lambda x, b, bd: torch.sigmoid(x), _call("sigmoid", r"\sigma")),
    _unary("softplus", lambda x, b, bd: F.softplus(x), _call("softplus", r"\mathrm{softplus}")),
    _unary("erf", lambda x, b, bd: torch.erf(x), _call("erf", r"\mathrm{erf}")),
    _unary("silu", lambda x, b, bd: F.silu(x), _call("SiLU", r"\mathrm{SiLU}")),
    _unary("gelu", lambda x, b, bd: F.gelu(x), _call("GELU", r"\mathrm{GELU}")),
    _unary("elu", lambda x, b, bd: F.elu(x), _call("ELU", r"\mathrm{ELU}")),
    _unary("leaky_relu", lambda x, b, bd: F.leaky_relu(x, 0.01), _call("LeakyReLU", r"\mathrm{LeakyReLU}")),
    _binary("add", lambda x1, x2, b, bd: x1 + x2, _add),
    _binary("sub", lambda x1, x2, b, bd: x1 - x2, _sub),
    _binary("mul", _mul_fn, _mul),
    _binary("max", lambda x1, x2, b, bd: torch.maximum(x1, x2), _call("max", r"\max")),
    _binary("min", lambda x1, x2, b, bd: torch.minimum(x1, x2), _call("min", r"\min")),
    _binary("sig_mul", lambda x1, x2, b, bd: torch.sigmoid(x1) * x2, _gated),
    _binary(
        "beta_mix",
        lambda x1, x2, b, bd: torch.sigmoid(b) * x1 + (1 - torch.sigmoid(b)) * x2,
        _beta_mix,
        beta_init="zero",
    ),
    _binary("left", lambda x1, x2, b, bd: x1, _left),
    _binary("right", lambda x1, x2, b, bd: x2, _right),
    # Defined but switched off in the reference search: the opt-in "extended" space.
    _unary("log_abs", lambda x, b, bd: torch.log(torch.abs(x) + 1e-5), _log_abs, extended=True),
    _unary("sin", lambda x, b, bd: torch.sin(x), _call("sin", r"\sin"), extended=True),
    _unary("cos", lambda x, b, bd: torch.cos(x), _call("cos", r"\cos"), extended=True),
    _unary("cosh", _cosh_fn, _clipped(_call("cosh", r"\cosh"), "", "10"), extended=True),
    _unary("sinc", lambda x, b, bd: torch.sinc(x / math.pi), _call("sinc", r"\mathrm{sinc}"), extended=True),
    _unary("gaussian", lambda x, b, bd: torch.exp(-(x**2)), _gaussian, extended=True),
    _binary("div", _divide_fn, _divide, extended=True),
    _binary(
        "exp_neg_abs_diff", lambda x1, x2, b, bd: torch.exp(-torch.abs(x1 - x2)), _neg_abs_difference, extended=True
    ),
    _binary(
        "exp_neg_sq_diff", lambda x1, x2, b, bd: torch.exp(-((x1 - x2) ** 2)), _neg_squared_difference, extended=True
    ),
)

OPERATIONS: dict[str, Operation] = {op.name: op for op in _OPERATIONS}


def operation(name: str) -> Operation:
    """Look up an operation by name, with an error listing the valid names."""
    try:
        return OPERATIONS[name]
    except KeyError:
        raise unknown_name("operation", name, OPERATIONS) from None


def candidates(arity: int, space: str = "standard") -> tuple[Operation, ...]:
    """The candidate operations of one slot kind, in their canonical order."""
    if space not in SPACES:
        raise unknown_name("operation space", space, SPACES)
    return tuple(op for op in _OPERATIONS if op.arity == arity and (space == "extended" or not op.extended))


def slot_candidates(slot: str, space: str = "standard") -> tuple[Operation, ...]:
    return candidates(SLOT_ARITY[slot], space)


def check_slot_op(slot: str, name: str) -> Operation:
    """The operation ``name`` if it may stand in ``slot`` (right arity), else a UserError."""
    op = operation(name)
    if op.arity != SLOT_ARITY[slot]:
        kind = "unary" if SLOT_ARITY[slot] == 1 else "binary"
        raise UserError(f"operation {name!r} cannot stand in slot {slot}, which needs a {kind} operation")
    return op


def space_size(space: str = "standard") -> int:
    """Number of discrete cells in the space (23^4 * 9^2 for the standard space)."""
    return math.prod(len(slot_candidates(slot, space)) for slot in SLOTS)


def initial_beta(op: Operation, generator: torch.Generator | None = None) -> float | None:
    """A fresh beta for ``op`` as the reference initialises it."""
    if op.beta_init == "normal":
        return float(BETA_INIT_MEAN + BETA_INIT_STD * torch.randn((), generator=generator))
    if op.beta_init == "zero":
        return 0.0
    return None
