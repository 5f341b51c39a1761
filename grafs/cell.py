"""The GRAFS supernet cell: one relaxed activation function shared by every activation site.

Each slot of ``f(x) = b1(u2(b0(u0(x), u1(x))), u3(x))`` outputs a mixture of its still-active
candidate operations, weighted by ``w ~ Dirichlet(elu(alpha) + 1)`` drawn with the
reparameterised sampler (DrNAS). The candidates' learnable scalars (betas) live in the cell too;
alphas and betas are the architecture parameters.

A network holds the cell through :meth:`SearchCell.site`: the model calls its activation
factory once per site, so a search builds it with ``factory = lambda: cell.site(nn.ReLU())``.
Sites keep a plain reference to the cell, so the cell's parameters are not part of
``model.parameters()`` and the weight optimizer never sees them; move the cell to the model's
device with ``cell.to(device)`` yourself.

Sampling: by default every site draws its own sample of all six slots' weights at every call
(variance-reduced sampling, as the reference code does). With ``shared_sample=True`` one sample
serves every site of a forward pass: call :meth:`SearchCell.begin_pass` before each forward
pass, or once :meth:`SearchCell.attach_pass_hook` on the model, which does it for you.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from grafs.errors import unknown_name
from grafs.fused import CellPlan, mixture_fused, mixture_reference
from grafs.genotype import Genotype
from grafs.ops import SLOTS, initial_beta, slot_candidates

ALPHA_INIT_SCALE = 1e-6

# Concentrations are floored here: elu(alpha) + 1 rounds to 0 in float32 below alpha ~ -17, and
# the Dirichlet sampler's gradient is NaN for concentrations near 0.
MIN_CONCENTRATION = 1e-6


@dataclass(frozen=True)
class ActiveIndices:
    """The active candidates of a cell's current plan, for drawing its mixture weights."""

    device: torch.device
    counts: tuple[int, ...]  # active ops per slot
    flat: Tensor  # their positions in the flat vectors over all candidates, slot by slot
    mixed: Tensor  # which of them belong to slots with more than one active op ...
    mixed_slot: Tensor  # ... and to which slot


class SlotParameters(nn.ParameterDict):
    """One parameter per slot, looked up by slot name (``"u0"``) or position (``0``)."""

    def __getitem__(self, key: str | int) -> nn.Parameter:
        return super().__getitem__(key if isinstance(key, str) else SLOTS[key])


class SearchCell(nn.Module):
    """Architecture logits, betas and active-op masks of the six slots, and the mixture they define.

    ``alphas[slot]`` holds one logit per candidate op of the slot (``slot_candidates`` order),
    ``betas[slot]`` one scalar per candidate that has one (unary slots: add_beta, mul_beta, beta;
    binary slots: beta_mix), and the buffer ``mask(slot)`` which candidates are still active; slots
    are named (``"u0"``) or numbered (``0``). All are initialised from torch's global RNG.

    ``fast`` selects the fused evaluation of :func:`grafs.fused.mixture_fused` (same outputs and
    gradients as the plain PyTorch reference, a fraction of its memory and time); ``fast=False``
    runs :func:`grafs.fused.mixture_reference` with autograd through every op.
    """

    def __init__(self, space: str = "standard", bounded: bool = True, shared_sample: bool = False, fast: bool = True):
        super().__init__()
        self.space = space
        self.bounded = bounded
        self.shared_sample = shared_sample
        self.fast = fast
        self.use_default = False
        self.candidates = tuple(slot_candidates(slot, space) for slot in SLOTS)
        self.alphas = SlotParameters()
        self.betas = SlotParameters()
        # Position of each beta in its slot's beta vector, per candidate (None: op has no beta).
        self._beta_slot_index: list[list[int | None]] = []
        for slot, options in zip(SLOTS, self.candidates, strict=True):
            self.alphas[slot] = nn.Parameter(torch.rand(len(options)) * ALPHA_INIT_SCALE)
            with_beta = [op for op in options if op.has_beta]
            self.betas[slot] = nn.Parameter(torch.tensor([initial_beta(op) for op in with_beta], dtype=torch.float32))
            positions, count = [], 0
            for op in options:
                positions.append(count if op.has_beta else None)
                count += op.has_beta
            self._beta_slot_index.append(positions)
            self.register_buffer(f"active_{slot}", torch.ones(len(options), dtype=torch.bool))
        plan = CellPlan(self.candidates, tuple(tuple(range(len(o))) for o in self.candidates), bounded)
        flat_ops = [op for options in self.candidates for op in options]
        beta_flat = [position for position, op in enumerate(flat_ops) if op.has_beta]
        beta_means = [op.beta_init_mean for op in flat_ops if op.has_beta]
        self.register_buffer("_beta_flat_index", torch.tensor(beta_flat), persistent=False)
        self.register_buffer("_beta_fallback", torch.tensor(beta_means, dtype=torch.float32), persistent=False)
        self.register_buffer("_nonfinite", torch.zeros((), dtype=torch.int64), persistent=False)
        self._plan_key: tuple | None = None
        self._plan: CellPlan = plan
        self._index_cache: ActiveIndices | None = None
        self._pass_draw: tuple[Tensor, Tensor, dict[str, Tensor]] | None = None

    # Parameters and state ---------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """Alphas and betas: everything the architecture optimizer trains."""
        return [*self.alphas.values(), *self.betas.values()]

    def mask(self, slot: int | str) -> Tensor:
        """The boolean active-op mask of ``slot`` (a buffer, saved in the state dict)."""
        return getattr(self, f"active_{SLOTS[_slot_index(slot)]}")

    def active_counts(self) -> list[int]:
        """Active ops per slot, in slot order."""
        return [len(indices) for indices in self.plan().active]

    def active_ops(self, slot: int | str) -> tuple[str, ...]:
        index = _slot_index(slot)
        return tuple(self.candidates[index][k].name for k in self.plan().active[index])

    def active_alphas(self, slot: int | str) -> Tensor:
        index = _slot_index(slot)
        return self.alphas[SLOTS[index]][list(self.plan().active[index])]

    def drop(self, slot: int | str | None = None) -> str:
        """Deactivate the active op with the smallest raw alpha in ``slot`` and return its name.

        Without ``slot``, the slot with the most active ops (the first on ties) loses one, as
        progressive shrinking does. A NaN alpha counts as the smallest.
        """
        if slot is None:
            counts = self.active_counts()
            slot = counts.index(max(counts))
        index = _slot_index(slot)
        active = self.plan().active[index]
        if len(active) < 2:
            raise ValueError(f"slot {SLOTS[index]} has a single active op left; it cannot be dropped")
        alphas = torch.nan_to_num(self.active_alphas(index).detach().cpu(), nan=-float("inf"))
        victim = active[int(torch.argmin(alphas))]
        with torch.no_grad():
            self.mask(index)[victim] = False
        return self.candidates[index][victim].name

    @property
    def nonfinite_events(self) -> int:
        """How many non-finite alpha or beta entries the sampler replaced, summed over all draws."""
        return int(self._nonfinite)

    @nonfinite_events.setter
    def nonfinite_events(self, value: int) -> None:
        self._nonfinite.fill_(value)

    def discretize(self) -> Genotype:
        """Per slot, the active op with the largest alpha, with its current beta."""
        ops, betas = [], []
        for index, slot in enumerate(SLOTS):
            active = self.plan().active[index]
            alphas = torch.nan_to_num(self.active_alphas(index).detach().cpu(), nan=-float("inf"))
            k = active[int(torch.argmax(alphas))]
            op = self.candidates[index][k]
            beta = None
            if op.has_beta:
                beta = float(self.betas[slot][self._beta_slot_index[index][k]].detach())
                beta = beta if math.isfinite(beta) else op.beta_init_mean
            ops.append(op.name)
            betas.append(beta)
        return Genotype(tuple(ops), tuple(betas), self.bounded)

    def plan(self) -> CellPlan:
        """The current structure (active ops per slot), rebuilt only when a mask changes."""
        masks = [self.mask(index) for index in range(len(SLOTS))]
        key = tuple((m.data_ptr(), m._version) for m in masks)
        if key != self._plan_key:
            active = tuple(tuple(int(k) for k in torch.nonzero(m.cpu()).flatten()) for m in masks)
            self._plan = CellPlan(self.candidates, active, self.bounded)
            self._plan_key = key
            self._index_cache = None
        return self._plan

    def _active_indices(self, device: torch.device) -> ActiveIndices:
        """Where the active candidates sit in the flat vectors, and which of them are mixed."""
        plan = self.plan()
        if self._index_cache is None or self._index_cache.device != device:
            positions = [plan.offsets[s] + k for s, active in enumerate(plan.active) for k in active]
            mixed = [(s, i) for s, active in enumerate(plan.active) if len(active) > 1 for i in range(len(active))]
            starts = [sum(len(a) for a in plan.active[:s]) for s in range(len(SLOTS))]
            self._index_cache = ActiveIndices(
                device=device,
                counts=tuple(len(active) for active in plan.active),
                flat=torch.tensor(positions, dtype=torch.long, device=device),
                mixed=torch.tensor([starts[s] + i for s, i in mixed], dtype=torch.long, device=device),
                mixed_slot=torch.tensor([s for s, _ in mixed], dtype=torch.long, device=device),
            )
        return self._index_cache

    # Sites and passes -------------------------------------------------------------------------
    def site(self, default: nn.Module) -> CellSite:
        """A new activation site computing this cell (or ``default`` while ``use_default`` is set)."""
        return CellSite(self, default)

    def begin_pass(self) -> None:
        """Start a forward pass: in shared-sample mode, the next site draws a fresh sample."""
        self._pass_draw = None

    def attach_pass_hook(self, model: nn.Module) -> RemovableHandle:
        """Call :meth:`begin_pass` before every forward pass of ``model``."""
        return model.register_forward_pre_hook(lambda module, args: self.begin_pass())

    # The mixture ------------------------------------------------------------------------------
    def sample(self) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Draw the mixture weights of every slot and read the (repaired) betas.

        Returns the flat weight and beta vectors over all candidates (zero for inactive ops and
        ops without beta) and, per slot, the weights of its active ops.

        Each slot's weights are Dirichlet(elu(alpha) + 1) over its active ops, drawn as normalized
        independent Gamma variates (the Dirichlet's construction) for all slots at once: one sampling
        node per site instead of six, which is most of the sampling's cost on small models. A slot
        with one active op has weight 1 (a one-component Dirichlet, whose sampler can give 0/0).
        """
        plan = self.plan()
        indices = self._active_indices(self.alphas[SLOTS[0]].device)
        alphas = torch.cat(list(self.alphas.values()))
        drawn = torch.ones(indices.flat.numel(), device=alphas.device, dtype=alphas.dtype)
        if indices.mixed.numel():
            mixed = alphas[indices.flat[indices.mixed]]
            finite = torch.isfinite(mixed)
            self._nonfinite += (~finite).sum()
            concentration = F.elu(torch.where(finite, mixed, torch.zeros_like(mixed))) + 1
            concentration = concentration.clamp_min(MIN_CONCENTRATION)
            gammas = torch.distributions.Gamma(concentration, 1.0, validate_args=False).rsample()
            totals = torch.zeros(len(SLOTS), device=gammas.device, dtype=gammas.dtype)
            totals = totals.index_add(0, indices.mixed_slot, gammas)
            drawn = drawn.index_copy(0, indices.mixed, gammas / totals[indices.mixed_slot])
        per_slot = dict(zip(SLOTS, drawn.split(indices.counts), strict=True))
        weights = torch.zeros(plan.size, device=drawn.device, dtype=drawn.dtype).index_copy(0, indices.flat, drawn)
        raw_betas = torch.cat(list(self.betas.values()))
        finite = torch.isfinite(raw_betas)
        self._nonfinite += (~finite).sum()
        repaired = torch.where(finite, raw_betas, self._beta_fallback.to(raw_betas.dtype))
        betas = torch.zeros(plan.size, device=drawn.device, dtype=repaired.dtype)
        betas = betas.index_copy(0, self._beta_flat_index, repaired)
        return weights, betas, per_slot

    def mixture(self, x: Tensor, weights: Tensor, betas: Tensor) -> Tensor:
        """The cell's output for given flat weights and betas (see :meth:`sample`)."""
        evaluate = mixture_fused if self.fast else mixture_reference
        return evaluate(x, weights.to(x.dtype), betas.to(x.dtype), self.plan())

    def _draw_for_site(self) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if not self.shared_sample:
            return self.sample()
        if self._pass_draw is None:
            self._pass_draw = self.sample()
        return self._pass_draw

    def extra_repr(self) -> str:
        counts = ", ".join(f"{slot}={count}" for slot, count in zip(SLOTS, self.active_counts(), strict=True))
        switches = f"space={self.space!r}, bounded={self.bounded}, shared_sample={self.shared_sample}, fast={self.fast}"
        return f"{switches}, active ops: {counts}"


class CellSite(nn.Module):
    """One activation site of a network searching with a :class:`SearchCell`.

    ``last_weights`` holds, per slot, the mixture weights of the active ops this site used in its
    latest call (detached), for inspection.
    """

    def __init__(self, cell: SearchCell, default: nn.Module):
        super().__init__()
        # A plain reference, not a submodule: the cell's parameters must stay out of the model's.
        object.__setattr__(self, "cell", cell)
        self.default = default
        self.last_weights: dict[str, Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        cell: SearchCell = self.cell
        if cell.use_default:
            return self.default(x)
        weights, betas, per_slot = cell._draw_for_site()
        self.last_weights = {slot: w.detach() for slot, w in per_slot.items()}
        return cell.mixture(x, weights, betas)

    def extra_repr(self) -> str:
        return "shared GRAFS cell"


def _slot_index(slot: int | str) -> int:
    if isinstance(slot, str):
        if slot not in SLOTS:
            raise unknown_name("slot", slot, SLOTS)
        return SLOTS.index(slot)
    if not 0 <= int(slot) < len(SLOTS):
        raise IndexError(f"slot index {slot} out of range 0..{len(SLOTS) - 1}")
    return int(slot)
