"""Discovered activations as data: the Genotype, its JSON file format and its drop-in module."""

from __future__ import annotations

import hashlib
import json
import math
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from grafs.errors import UserError
from grafs.files import write_text_atomic
from grafs.fused import (
    mixture_fused,
    mixture_with_derivative,
    native_kernel_applies,
    single_op_plan,
    single_op_weights,
)
from grafs.ops import SLOTS, Expr, Operation, check_slot_op, initial_beta, slot_candidates

FORMAT = "grafs-genotype/1"
_KEYS = ("format", "ops", "betas", "bounded")
_EXAMPLE = '{"format": "grafs-genotype/1", "ops": [6 names], "betas": [6 numbers or null], "bounded": true}'

FINGERPRINT_POINTS = 1000
FINGERPRINT_SEED = 0
FINGERPRINT_DECIMALS = 6


@dataclass(frozen=True)
class Genotype:
    """One cell of the search space: an operation and its beta (or None) per slot.

    Slots are in the order ``u0, u1, b0, u2, u3, b1`` and the cell computes
    ``f(x) = b1(u2(b0(u0(x), u1(x))), u3(x))`` elementwise.
    """

    ops: tuple[str, ...]
    betas: tuple[float | None, ...]
    bounded: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "betas", tuple(None if b is None else float(b) for b in self.betas))
        _validate(self.ops, self.betas, self.bounded)

    # Construction -----------------------------------------------------------------------
    @classmethod
    def from_ops(
        cls, ops: Sequence[str], betas: Sequence[float | None] | None = None, bounded: bool = True
    ) -> Genotype:
        """A genotype from op names; betas default to the initial mean of each op's beta."""
        if betas is None:
            if len(ops) != len(SLOTS):
                raise UserError(f"a genotype needs {len(SLOTS)} operations ({', '.join(SLOTS)}), got {len(ops)}")
            betas = [check_slot_op(slot, name).beta_init_mean for slot, name in zip(SLOTS, ops, strict=False)]
        return cls(tuple(ops), tuple(betas), bounded)

    @classmethod
    def random(
        cls, generator: torch.Generator | None = None, space: str = "standard", bounded: bool = True
    ) -> Genotype:
        """A uniformly random cell, betas drawn as the search initialises them."""
        chosen: list[Operation] = []
        for slot in SLOTS:
            options = slot_candidates(slot, space)
            chosen.append(options[int(torch.randint(len(options), (), generator=generator))])
        return cls(tuple(op.name for op in chosen), tuple(initial_beta(op, generator) for op in chosen), bounded)

    @classmethod
    def from_dict(cls, data: object, source: str = "genotype") -> Genotype:
        if not isinstance(data, Mapping):
            raise UserError(f"{source}: expected a JSON object like {_EXAMPLE}")
        unknown = sorted(set(data) - set(_KEYS))
        missing = [key for key in _KEYS if key not in data]
        if unknown or missing:
            problem = f"unknown keys {unknown}" if unknown else f"missing keys {missing}"
            raise UserError(f"{source}: {problem}; a genotype file looks like {_EXAMPLE}")
        if data["format"] != FORMAT:
            raise UserError(f"{source}: format {data['format']!r} is not supported; expected {FORMAT!r}")
        ops, betas, bounded = data["ops"], data["betas"], data["bounded"]
        if not isinstance(ops, list) or not all(isinstance(name, str) for name in ops):
            raise UserError(f"{source}: 'ops' must be a list of {len(SLOTS)} operation names")
        if not isinstance(betas, list) or not all(_is_beta_value(b) for b in betas):
            raise UserError(f"{source}: 'betas' must be a list of {len(SLOTS)} finite numbers or nulls")
        if not isinstance(bounded, bool):
            raise UserError(f"{source}: 'bounded' must be true or false")
        try:
            return cls(tuple(ops), tuple(betas), bounded)
        except UserError as error:
            raise UserError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Genotype:
        """Read a genotype JSON file; anything malformed is refused with one clear error."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"genotype file {path} does not exist; pass the path of a genotype.json") from None
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(
                f"genotype file {path} cannot be read ({type(error).__name__}); pass a genotype.json"
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(
                f"{path} is not valid JSON ({error.msg} at line {error.lineno}); expected {_EXAMPLE}"
            ) from None
        except (ValueError, RecursionError) as error:  # a number of too many digits, nesting too deep
            raise UserError(f"{path} is not a genotype file ({type(error).__name__}); expected {_EXAMPLE}") from None
        return cls.from_dict(data, source=str(path))

    # Serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "ops": list(self.ops), "betas": list(self.betas), "bounded": self.bounded}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON file atomically, so a reader never sees half a genotype."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, self.to_json())
        return path

    # Use --------------------------------------------------------------------------------
    def to_module(self, learnable_betas: bool = False) -> GenotypeActivation:
        """A fresh drop-in activation module; also usable as a model's activation factory."""
        return GenotypeActivation(self, learnable_betas=learnable_betas)

    @property
    def operations(self) -> tuple[Operation, ...]:
        return tuple(check_slot_op(slot, name) for slot, name in zip(SLOTS, self.ops, strict=False))

    def with_bounds(self, bounded: bool) -> Genotype:
        return Genotype(self.ops, self.betas, bounded)

    def formula(self) -> str:
        """A simplified closed form: projections and identities removed, betas as numbers."""
        return self._render(latex=False).text

    def latex(self) -> str:
        return self._render(latex=True).text

    def _render(self, latex: bool) -> Expr:
        def apply(index: int, *args: Expr) -> Expr:
            return self.operations[index].render(args, self.betas[index], self.bounded, latex)

        x = Expr("x", 5)
        return apply(5, apply(3, apply(2, apply(0, x), apply(1, x))), apply(4, x))

    def fingerprint(self) -> str:
        """A functional fingerprint: equal for genotypes that compute the same function.

        The function is evaluated in double precision on fixed N(0, 1) sample points and the
        rounded outputs are hashed, as Act-Bench deduplicates activation functions.
        """
        with torch.no_grad():
            values = self.to_module().double()(fingerprint_points()).numpy()
        rounded = np.round(np.nan_to_num(values, nan=0.0, posinf=np.inf, neginf=-np.inf), FINGERPRINT_DECIMALS) + 0.0
        return hashlib.sha256(rounded.tobytes()).hexdigest()[:16]

    def __str__(self) -> str:
        return self.formula()


def fingerprint_points() -> Tensor:
    generator = torch.Generator().manual_seed(FINGERPRINT_SEED)
    return torch.randn(FINGERPRINT_POINTS, generator=generator, dtype=torch.float64)


def _is_beta_value(value: object) -> bool:
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate(ops: tuple, betas: tuple, bounded: object) -> None:
    if len(ops) != len(SLOTS) or len(betas) != len(SLOTS):
        raise UserError(
            f"a genotype needs exactly {len(SLOTS)} ops and {len(SLOTS)} betas (slots {', '.join(SLOTS)}), "
            f"got {len(ops)} ops and {len(betas)} betas"
        )
    if not isinstance(bounded, bool):
        raise UserError("'bounded' must be true or false")
    for slot, name, beta in zip(SLOTS, ops, betas, strict=False):
        op = check_slot_op(slot, name)
        if op.has_beta and beta is None:
            raise UserError(f"slot {slot} holds {name!r}, which needs a beta value, but its beta is null")
        if not op.has_beta and beta is not None:
            raise UserError(f"slot {slot} holds {name!r}, which has no beta, so its beta must be null (got {beta})")
        if beta is not None and not math.isfinite(beta):
            raise UserError(f"slot {slot}: beta must be a finite number, got {beta}")


class GenotypeActivation(nn.Module):
    """The activation a Genotype describes, applied elementwise.

    Betas are frozen buffers by default, as the reference retrains discovered functions;
    ``learnable_betas=True`` makes them parameters trained with the network weights.

    On CPU float32 inputs the cell runs as one fused autograd node in the compiled kernel of
    :mod:`grafs.fused` (a mixture with one-hot weights): with fixed betas one pass computes the
    output and its derivative, the only tensor kept for the backward pass; with learnable betas
    the node keeps its input and recomputes the rest in the backward pass. Elsewhere, or without
    a C compiler, the six operations run as PyTorch operations. All give the same outputs and
    gradients.
    """

    def __init__(self, genotype: Genotype, learnable_betas: bool = False):
        super().__init__()
        self.genotype = genotype
        self.bounded = genotype.bounded
        self._ops = genotype.operations
        self._plan = single_op_plan(self._ops, self.bounded)
        self._weights = single_op_weights(self._plan)
        self._flat_betas_cache: tuple | None = None  # see _flat_betas
        # The betas the fused path reads (those of slots it computes) and their places in its
        # flat beta vector; a discarded branch's beta gets no gradient, as in the plain path.
        self._beta_slots = [i for i, beta in enumerate(genotype.betas) if beta is not None and self._plan.active[i]]
        self._beta_positions = torch.tensor(
            [self._plan.offsets[i] + self._plan.active[i][0] for i in self._beta_slots], dtype=torch.long
        )
        for slot, beta in zip(SLOTS, genotype.betas, strict=False):
            if beta is None:
                continue
            value = torch.tensor(float(beta))
            if learnable_betas:
                self.register_parameter(f"beta_{slot}", nn.Parameter(value))
            else:
                self.register_buffer(f"beta_{slot}", value)

    def _beta(self, index: int) -> Tensor | None:
        return getattr(self, f"beta_{SLOTS[index]}", None)

    def _apply_op(self, index: int, *inputs: Tensor) -> Tensor:
        return self._ops[index](*inputs, beta=self._beta(index), bounded=self.bounded)

    def _binary(self, index: int, left, right) -> Tensor:
        # Projections skip the branch they discard instead of computing and dropping it.
        name = self._ops[index].name
        if name == "left":
            return left()
        if name == "right":
            return right()
        return self._apply_op(index, left(), right())

    def _flat_betas(self) -> Tensor:
        sources = [self._beta(index) for index in self._beta_slots]
        # Fixed betas rarely change (only by loading a state), so their flat vector is kept while
        # the same tensors are at the same versions; learnable ones are gathered anew on every
        # call, inside autograd. The cache holds the tensors themselves, so none is freed and its
        # identity taken by another.
        fixed = not any(beta.requires_grad for beta in sources)
        versions = [beta._version for beta in sources]
        cached = self._flat_betas_cache
        if fixed and cached is not None and cached[0] == versions and all(map(operator.is_, cached[1], sources)):
            return cached[2]
        betas = torch.zeros(self._plan.size)
        if sources:
            betas = betas.index_copy(0, self._beta_positions, torch.stack([beta.float() for beta in sources]).cpu())
        self._flat_betas_cache = (versions, sources, betas) if fixed else None
        return betas

    def forward(self, x: Tensor) -> Tensor:
        if native_kernel_applies(x, self._plan):
            betas = self._flat_betas()
            if x.requires_grad and not betas.requires_grad and torch.is_grad_enabled():
                return mixture_with_derivative(x, self._weights, betas, self._plan)
            return mixture_fused(x, self._weights, betas, self._plan)

        def inner() -> Tensor:
            return self._binary(2, lambda: self._apply_op(0, x), lambda: self._apply_op(1, x))

        return self._binary(5, lambda: self._apply_op(3, inner()), lambda: self._apply_op(4, x))

    def extra_repr(self) -> str:
        return self.genotype.formula()
